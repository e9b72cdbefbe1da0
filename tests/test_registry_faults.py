"""Network faults: connections cut mid-transfer, 5xx and 429 answers."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading

import pytest

from modelpack.errors import RateLimitError
from modelpack.registry import pull, push
from modelpack.registry.client import RegistryClient
from modelpack.store import Store
from registry_server import make_bundle, registry  # noqa: F401  (fixture)

pytestmark = pytest.mark.registry


class CuttingProxy:
    """A TCP proxy to the registry that cuts the first connection carrying more than `cut_after`
    bytes in one direction ('up': client to registry, 'down': registry to client)."""

    def __init__(self, upstream_port: int, cut_after: int, direction: str) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.direction = direction
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        moved = 0
        try:
            while data := src.recv(1 << 16):
                moved += len(data)
                if direction == self.direction and self.cuts == 0 and moved > self.cut_after:
                    self.cuts += 1
                    dst.sendall(data[: len(data) // 2])
                    raise ConnectionResetError("cut")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.listener.close()


def test_push_survives_a_cut_connection(registry, tmp_path):
    proxy = CuttingProxy(registry.port, cut_after=5 << 20, direction="up")
    try:
        host = f"127.0.0.1:{proxy.port}"
        store = Store(tmp_path / "h")
        ref = f"{host}/cut/push:1"
        raw = make_bundle(store, ref, model_bytes=os.urandom(12 << 20))
        client = RegistryClient(host, insecure=True, backoff=0.01)
        result = push(ref, store=store, client=client, chunk_size=2 << 20)
        assert proxy.cuts == 1
        model = next(b for b in result.blobs if b.size == 12 << 20)
        # distribution drops a session whose PATCH was cut midway: the blob starts over once
        assert model.restarts == 1 and model.bytes_sent > 12 << 20
        assert model.restart_reason.startswith("BLOB_UPLOAD_INVALID: ")  # said, with the registry's code
        assert model.resent_bytes >= 2 << 20 and model.resent_bytes % (2 << 20) == 0  # whole confirmed chunks
        fresh = Store(tmp_path / "fresh")
        pull(f"{registry.host}/cut/push:1", store=fresh, insecure=True)
        assert fresh.get_manifest(f"{registry.host}/cut/push:1")[0] == raw
    finally:
        proxy.close()


def test_pull_resumes_after_a_cut_connection(registry, tmp_path):
    store = Store(tmp_path / "h")
    ref = f"{registry.host}/cut/pull:1"
    payload = os.urandom(12 << 20)
    raw = make_bundle(store, ref, model_bytes=payload)
    push(ref, store=store, insecure=True)
    proxy = CuttingProxy(registry.port, cut_after=5 << 20, direction="down")
    try:
        host = f"127.0.0.1:{proxy.port}"
        fresh = Store(tmp_path / "fresh")
        result = pull(f"{host}/cut/pull:1", store=fresh, client=RegistryClient(host, insecure=True, backoff=0.01))
        assert proxy.cuts == 1
        model = next(b for b in result.blobs if b.size == len(payload))
        assert model.bytes_received == len(payload)  # the Range request fetched only what was missing
        assert fresh.blob_path(model.digest).read_bytes() == payload
        assert fresh.get_manifest(f"{host}/cut/pull:1")[0] == raw
    finally:
        proxy.close()


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers GET /v2/ with the statuses in `script`, then 200 like a registry."""

    script: list[int] = []
    seen: list[int] = []

    def do_GET(self):
        status = self.script.pop(0) if self.script else 200
        self.seen.append(status)
        body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode() \
            if status == 429 else b"{}"
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(script: list[int]):
    handler = type("Handler", (Scripted,), {"script": list(script), "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_retries_5xx_then_succeeds_and_429_is_one_line():
    server, handler = serve([503, 502, 500])
    try:
        client = RegistryClient(f"127.0.0.1:{server.server_port}", insecure=True, backoff=0.01)
        client.ping()
        assert handler.seen == [503, 502, 500, 200] and client.base.startswith("http://")
    finally:
        server.shutdown()
    server, handler = serve([429] * 10)
    try:
        client = RegistryClient(f"127.0.0.1:{server.server_port}", insecure=True, backoff=0.01, retries=2)
        client._base = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(RateLimitError) as err:
            client.request("GET", "/v2/")
        assert len(handler.seen) == 3 and "\n" not in str(err.value) and "TOOMANYREQUESTS" in str(err.value)
    finally:
        server.shutdown()
