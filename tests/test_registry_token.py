"""The bearer-token flow against docker-registry configured for token auth.

A small token service (Python, in this process) issues RS256 JWTs with an x5c certificate the
registry trusts: the same protocol Docker Hub, GHCR and Harbor use. It grants what the
challenge's scopes ask for to alice, and nothing to anonymous callers.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from modelpack.errors import AuthError
from modelpack.registry import Credentials, RegistryClient, pull, push
from modelpack.store import Store
from registry_server import PASSWORD, USER, make_bundle, running_registry

crypto = pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.registry
SERVICE = "modelpack-test-registry"
ISSUER = "modelpack-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelpack token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.requests: list[dict] = []

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def token(self, subject: str, access: list[dict]) -> str:
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def handler(self):
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                    if (name, pw) != (USER, PASSWORD):
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                scopes = query.get("scope", [])
                service.requests.append({"service": query.get("service", [None])[0], "scopes": scopes,
                                         "user": user})
                access = []
                if user is not None:
                    for scope in scopes:
                        kind, name, actions = scope.split(":")
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                body = json.dumps({"token": service.token(user or "", access)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("token-registry")
    service = TokenService()
    (tmp / "token-cert.pem").write_bytes(service.cert_pem())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), service.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    auth = (f"auth:\n  token:\n    realm: http://127.0.0.1:{server.server_port}/token\n"
            f"    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {tmp / 'token-cert.pem'}\n")
    try:
        with running_registry(tmp, auth_config=auth) as registry:
            yield registry, service
    finally:
        server.shutdown()


def test_bearer_flow_push_pull(token_registry, tmp_path):
    registry, service = token_registry
    creds = Credentials(USER, PASSWORD)
    store = Store(tmp_path / "h")
    ref = f"{registry.host}/tok/m:1"
    raw = make_bundle(store, ref, model_bytes=os.urandom(1 << 20))
    client = RegistryClient(registry.host, insecure=True, credentials=creds)
    result = push(ref, store=store, client=client)
    assert {b.action for b in result.blobs} == {"uploaded"}
    asked = [r for r in service.requests if r["user"] == USER]
    assert asked and all(r["service"] == SERVICE for r in asked)
    assert any("repository:tok/m:pull,push" in r["scopes"] for r in asked)

    # a second repository on the same registry: blobs are mounted, which needs pull on the source
    copy = push(ref, f"{registry.host}/tok/copy:1", store=store,
                client=RegistryClient(registry.host, insecure=True, credentials=creds))
    assert {b.action for b in copy.blobs} == {"mounted"}
    assert any("repository:tok/m:pull" in r["scopes"] and "repository:tok/copy:pull,push" in r["scopes"]
               for r in service.requests)

    fresh = Store(tmp_path / "fresh")
    pull(ref, store=fresh, client=RegistryClient(registry.host, insecure=True, credentials=creds))
    assert fresh.get_manifest(ref)[0] == raw


def test_bearer_flow_anonymous_is_refused(token_registry, tmp_path):
    registry, _ = token_registry
    with pytest.raises(AuthError):
        pull(f"{registry.host}/tok/m:1", store=Store(tmp_path / "h"), insecure=True)
    with pytest.raises(AuthError):
        pull(f"{registry.host}/tok/m:1", store=Store(tmp_path / "h"),
             client=RegistryClient(registry.host, insecure=True, credentials=Credentials(USER, "wrong")))
