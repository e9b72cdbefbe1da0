"""Push/pull through a real docker-registry (CNCF distribution), checked with skopeo."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from modelpack.cli import main
from modelpack.errors import (AuthError, DigestMismatchError, InvalidNameError, ProtocolError, RegistryError,
                              RegistryNotFoundError)
from modelpack.registry import list_tags, pull, push
from modelpack.registry.auth import get_credentials
from modelpack.store import Store
from registry_server import auth_registry, make_bundle, registry  # noqa: F401  (fixtures)

pytestmark = pytest.mark.registry
SKOPEO = shutil.which("skopeo")


@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """Credentials go to a temp docker config, never ~/.docker."""
    cfg = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    for var in ("MODELPACK_AUTH_FILE", "MODELPACK_REGISTRY_USER", "MODELPACK_REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    return cfg / "config.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def login(server, monkeypatch, password=None) -> int:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO((password or server.password) + "\n"))
    return main(["login", server.host, "-u", server.user, "--password-stdin", "--insecure"])


def test_auth_is_really_on(auth_registry, tmp_path, docker_config, capsys):
    r = requests.get(f"{auth_registry.url}/v2/", timeout=5)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(f"{auth_registry.url}/v2/", auth=(auth_registry.user, auth_registry.password), timeout=5)
    assert r.status_code == 200
    with pytest.raises(AuthError):
        pull(f"{auth_registry.host}/ns/nothing:latest", store=Store(tmp_path / "h"), insecure=True)
    rc = main(["pull", f"{auth_registry.host}/ns/nothing:latest", "--insecure"])
    err = capsys.readouterr().err
    assert rc != 0 and err.splitlines()[0].startswith("error: ") and "modelpack login" in err


def test_login_logout_and_wrong_password(auth_registry, docker_config, monkeypatch, capsys):
    assert login(auth_registry, monkeypatch, password="wrong") != 0
    assert not docker_config.exists()  # a failed login stores nothing
    assert login(auth_registry, monkeypatch) == 0
    out = capsys.readouterr()
    assert auth_registry.password not in out.out + out.err
    assert oct(docker_config.stat().st_mode & 0o777) == "0o600"
    creds = get_credentials(auth_registry.host)
    assert creds.username == auth_registry.user and creds.password == auth_registry.password
    assert auth_registry.password not in repr(creds)
    assert main(["logout", auth_registry.host]) == 0
    assert get_credentials(auth_registry.host) is None


def test_env_credentials(auth_registry, docker_config, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELPACK_REGISTRY_USER", auth_registry.user)
    monkeypatch.setenv("MODELPACK_REGISTRY_PASSWORD", auth_registry.password)
    store = Store(tmp_path / "h")
    make_bundle(store, f"{auth_registry.host}/env/m:1", model_bytes=b"weights" * 100)
    result = push(f"{auth_registry.host}/env/m:1", store=store, insecure=True)
    assert result.manifest_digest and list_tags(f"{auth_registry.host}/env/m", insecure=True) == ["1"]


def test_push_pull_round_trip(auth_registry, tmp_path, docker_config, monkeypatch, capsys):
    assert login(auth_registry, monkeypatch) == 0
    home1, home2 = tmp_path / "home1", tmp_path / "home2"
    ref = f"{auth_registry.host}/team/tiny:q8"
    raw = make_bundle(Store(home1), ref, model_bytes=os.urandom(3 << 20) + b"end")
    capsys.readouterr()

    monkeypatch.setenv("MODELPACK_HOME", str(home1))
    assert main(["push", ref, "--insecure", "--json", "--chunk-size", str(1 << 20)]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["manifest_digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert [b["action"] for b in pushed["blobs"]] == ["uploaded"] * 3
    assert pushed["bytes_sent"] == sum(b["size"] for b in pushed["blobs"])

    assert main(["push", ref, "--insecure", "--json"]) == 0  # again: HEAD finds every blob
    again = json.loads(capsys.readouterr().out)
    assert again["bytes_sent"] == 0 and {b["action"] for b in again["blobs"]} == {"exists"}

    monkeypatch.setenv("MODELPACK_HOME", str(home2))
    assert main(["pull", ref, "--insecure", "--json"]) == 0
    pulled = json.loads(capsys.readouterr().out)
    assert pulled["manifest_digest"] == pushed["manifest_digest"]
    store1, store2 = Store(home1), Store(home2)
    assert store2.get_manifest(ref)[0] == raw
    for blob in pulled["blobs"]:
        assert sha256_file(store2.blob_path(blob["digest"])) == blob["digest"]
        assert store2.blob_path(blob["digest"]).read_bytes() == store1.blob_path(blob["digest"]).read_bytes()
    assert not list((home2 / "downloads").glob("*.partial"))


def test_cross_repo_mount(registry, tmp_path):
    store = Store(tmp_path / "h")
    make_bundle(store, f"{registry.host}/a/m:1", model_bytes=os.urandom(1 << 20))
    push(f"{registry.host}/a/m:1", store=store, insecure=True)
    second = push(f"{registry.host}/a/m:1", f"{registry.host}/b/copy:1", store=store, insecure=True)
    assert {b.action for b in second.blobs} == {"mounted"} and second.bytes_sent == 0
    assert list_tags(f"{registry.host}/b/copy", insecure=True) == ["1"]


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
@pytest.mark.parametrize("fmt", ["ollama", "modelpack"])
def test_skopeo_reads_what_we_push(registry, tmp_path, fmt):
    store = Store(tmp_path / "h")
    ref = f"{registry.host}/sk/{fmt}:v1"
    raw = make_bundle(store, ref, model_bytes=os.urandom(1 << 20), fmt=fmt)
    push(ref, store=store, insecure=True)
    docker_ref = f"docker://{registry.host}/sk/{fmt}:v1"
    out = subprocess.run([SKOPEO, "inspect", "--raw", "--tls-verify=false", docker_ref],
                         capture_output=True, check=True, timeout=60).stdout
    assert out.rstrip(b"\n") == raw.rstrip(b"\n")
    doc = json.loads(raw)
    expected_type = "application/vnd.docker.distribution.manifest.v2+json" if fmt == "ollama" else \
        "application/vnd.oci.image.manifest.v1+json"
    r = requests.head(f"{registry.url}/v2/sk/{fmt}/manifests/v1", timeout=5,
                      headers={"Accept": expected_type + ", application/vnd.oci.image.manifest.v1+json"})
    assert r.headers["Content-Type"] == expected_type
    if fmt == "ollama":
        return  # skopeo 1.9 cannot copy docker v2s2 manifests whose layers are not image layers
    layout = tmp_path / "oci"
    proc = subprocess.run([SKOPEO, "copy", "--src-tls-verify=false", "--preserve-digests", docker_ref,
                           f"oci:{layout}:v1"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    for desc in [doc["config"], *doc["layers"]]:
        blob = layout / "blobs" / "sha256" / desc["digest"][7:]
        assert sha256_file(blob) == desc["digest"] and blob.stat().st_size == desc["size"]


def test_pull_refuses_a_corrupt_blob(registry, tmp_path):
    store = Store(tmp_path / "h")
    ref = f"{registry.host}/bad/m:1"
    raw = make_bundle(store, ref, model_bytes=os.urandom(2 << 20))
    push(ref, store=store, insecure=True)
    model_digest = json.loads(raw)["layers"][0]["digest"]
    data_path = registry.blob_data_path(model_digest)
    data = bytearray(data_path.read_bytes())
    data[12345] ^= 0xFF  # same size, one bit pattern changed on the registry's disk
    data_path.write_bytes(bytes(data))

    empty = Store(tmp_path / "empty")
    with pytest.raises(DigestMismatchError) as err:
        pull(ref, store=empty, insecure=True)
    assert err.value.digest == model_digest
    assert not empty.has_blob(model_digest) and not empty.has_manifest(ref)
    assert not list((empty.home / "downloads").glob("*.partial"))


def test_pull_resumes_a_partial_download(registry, tmp_path):
    store = Store(tmp_path / "h")
    ref = f"{registry.host}/resume/m:1"
    payload = os.urandom(3 << 20)
    raw = make_bundle(store, ref, model_bytes=payload)
    push(ref, store=store, insecure=True)
    digest = json.loads(raw)["layers"][0]["digest"]

    target = Store(tmp_path / "t")
    partial = target.home / "downloads" / f"sha256-{digest[7:]}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(payload[:1_000_000])
    result = pull(ref, store=target, insecure=True)
    model = next(b for b in result.blobs if b.digest == digest)
    assert model.action == "resumed" and model.resumed_from == 1_000_000
    assert model.bytes_received == len(payload) - 1_000_000
    assert target.blob_path(digest).read_bytes() == payload

    # a partial file whose bytes are wrong is caught by the digest check: nothing stored
    bad = Store(tmp_path / "bad")
    partial = bad.home / "downloads" / f"sha256-{digest[7:]}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1000)
    with pytest.raises(DigestMismatchError):
        pull(ref, store=bad, insecure=True)
    assert not bad.has_blob(digest) and not partial.exists()
    assert pull(ref, store=bad, insecure=True).manifest_digest == result.manifest_digest  # then it works


def test_one_line_errors(registry, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "h"))
    with pytest.raises(RegistryNotFoundError):
        pull(f"{registry.host}/ns/missing:latest", store=Store(tmp_path / "h"), insecure=True)
    assert main(["pull", f"{registry.host}/ns/missing:latest", "--insecure"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "not found" in err[0] and "MANIFEST_UNKNOWN" in err[0] and "/v2/ns/missing/manifests/latest" in err[0]

    # a name is rejected before any request: port 9 has no server, yet the error is the name
    with pytest.raises(InvalidNameError):
        pull("127.0.0.1:9/ns/-bad:1", store=Store(tmp_path / "h"), insecure=True)
    assert main(["push", "127.0.0.1:9/ns/m:t", "127.0.0.1:9/n$/m:t"]) == 2

    # an HTTP server that is not a registry
    class NotARegistry(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b"<html>nope</html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotARegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ProtocolError, match="not an OCI registry"):
            pull(f"127.0.0.1:{server.server_port}/ns/m:1", store=Store(tmp_path / "h"), insecure=True)
    finally:
        server.shutdown()

    # plain http needs --insecure
    assert main(["pull", f"{registry.host}/ns/m:1"]) == 1
    assert "--insecure" in capsys.readouterr().err


def test_push_refuses_a_corrupt_local_blob(registry, tmp_path):
    store = Store(tmp_path / "h")
    ref = f"{registry.host}/corrupt/local:1"
    raw = make_bundle(store, ref, model_bytes=os.urandom(1 << 20))
    digest = json.loads(raw)["layers"][0]["digest"]
    path = store.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(os.urandom(1 << 20))  # same size, other bytes
    with pytest.raises(DigestMismatchError) as err:  # our own hash while sending
        push(ref, store=store, insecure=True)
    assert err.value.digest == digest and err.value.path == str(path)
    with pytest.raises(RegistryError, match="DIGEST_INVALID"):  # the registry's check of PUT ?digest=
        push(ref, store=store, insecure=True, verify_local=False)
    r = requests.head(f"{registry.url}/v2/corrupt/local/manifests/1", timeout=5)
    assert r.status_code == 404  # no tag points at the corrupt bundle


HELPER = """#!{python}
import json, sys
from pathlib import Path
db = Path({db!r})
entries = json.loads(db.read_text()) if db.exists() else {{}}
action, data = sys.argv[1], sys.stdin.read()
if action == "store":
    doc = json.loads(data)
    entries[doc["ServerURL"]] = {{"Username": doc["Username"], "Secret": doc["Secret"]}}
elif action == "get":
    if data.strip() not in entries:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": data.strip(), **entries[data.strip()]}}))
elif action == "erase":
    if entries.pop(data.strip(), None) is None:
        sys.exit(1)
db.write_text(json.dumps(entries))
"""


def test_credential_helper(auth_registry, tmp_path, docker_config, monkeypatch):
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-mpt"
    helper.write_text(HELPER.format(python=sys.executable, db=str(tmp_path / "helper-db.json")))
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    docker_config.parent.mkdir(parents=True)
    docker_config.write_text(json.dumps({"credsStore": "mpt"}))

    assert login(auth_registry, monkeypatch) == 0
    assert auth_registry.password not in docker_config.read_text()  # the secret went to the helper
    assert auth_registry.password in (tmp_path / "helper-db.json").read_text()
    creds = get_credentials(auth_registry.host)
    assert (creds.username, creds.password, creds.source) == (auth_registry.user, auth_registry.password, "helper:mpt")
    store = Store(tmp_path / "h")
    make_bundle(store, f"{auth_registry.host}/helper/m:1", model_bytes=b"x" * 1000)
    assert push(f"{auth_registry.host}/helper/m:1", store=store, insecure=True).manifest_digest
    assert main(["logout", auth_registry.host]) == 0
    assert get_credentials(auth_registry.host) is None


def test_references_pinned_by_digest(registry, tmp_path, monkeypatch, capsys):
    from modelpack.names import parse_ref

    store = Store(tmp_path / "h")
    ref = f"{registry.host}/dig/m:1"
    raw = make_bundle(store, ref, model_bytes=os.urandom(1 << 16))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert push(ref, store=store, insecure=True).manifest_digest == digest
    with pytest.raises(InvalidNameError):  # other commands keep refusing '@'
        parse_ref(f"{registry.host}/dig/m@{digest}")
    with pytest.raises(InvalidNameError):
        parse_ref(f"{registry.host}/dig/m@sha256:{'g' * 64}", allow_digest=True)
    pinned = parse_ref(f"{registry.host}/dig/m@{digest}", allow_digest=True)
    assert (pinned.tag, pinned.digest, str(pinned)) == ("latest", digest, f"{registry.host}/dig/m:latest@{digest}")

    # pull by digest: stored under the tag given (default latest), verified against the digest
    fresh = Store(tmp_path / "fresh")
    result = pull(f"{registry.host}/dig/m@{digest}", store=fresh, insecure=True)
    assert result.manifest_digest == digest and result.ref == f"{registry.host}/dig/m:latest"
    assert fresh.get_manifest(f"{registry.host}/dig/m:latest")[0] == raw
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "cli"))
    capsys.readouterr()
    assert main(["pull", f"{registry.host}/dig/m:pinned@{digest}", "--insecure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ref"] == f"{registry.host}/dig/m:pinned"
    assert Store(tmp_path / "cli").get_manifest(f"{registry.host}/dig/m:pinned")[0] == raw

    # push from a local manifest named by digest (under tag '1', not the default tag)
    pushed = push(f"{registry.host}/dig/m@{digest}", f"{registry.host}/dig/copy:2", store=store, insecure=True)
    assert pushed.manifest_digest == digest
    # to a destination pinned by digest: pushed untagged, by digest; a wrong pin is refused first
    push(ref, f"{registry.host}/dig/bare@{digest}", store=store, insecure=True)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    assert requests.head(f"{registry.url}/v2/dig/bare/manifests/{digest}", headers=accept, timeout=5).ok
    assert requests.head(f"{registry.url}/v2/dig/bare/manifests/latest", headers=accept, timeout=5).status_code == 404
    with pytest.raises(DigestMismatchError):
        push(ref, f"{registry.host}/dig/bare@sha256:{'0' * 64}", store=store, insecure=True)
    assert pull(f"{registry.host}/dig/bare@{digest}", store=Store(tmp_path / "f2"), insecure=True).manifest_digest \
        == digest

    # manifest bytes that do not hash to the pinned digest are refused, nothing is stored
    on_disk = registry.blob_data_path(digest)
    on_disk.write_bytes(json.dumps({**json.loads(raw), "annotations": {"x": "tampered"}}).encode())
    tampered = Store(tmp_path / "tampered")
    with pytest.raises(DigestMismatchError, match="manifest hashes to sha256:"):
        pull(f"{registry.host}/dig/copy@{digest}", store=tampered, insecure=True)
    assert not tampered.has_manifest(f"{registry.host}/dig/copy:latest")
