"""A real OCI registry for tests and benchmarks: Debian's `docker-registry` (CNCF distribution).

`start_registry(tmp)` runs it on 127.0.0.1 with a free port, storage under `tmp/storage`, a fixed
http.secret and optionally htpasswd (bcrypt) auth; `registry` / `auth_registry` are pytest
fixtures around it. Tests skip when docker-registry is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER = "alice"
PASSWORD = "s3cret-pw"
HTTP_SECRET = "modelpack-test-secret"

CONFIG = """\
version: 0.1
log:
  level: {log_level}
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
{auth}"""

AUTH = """\
auth:
  htpasswd:
    realm: modelpack-test
    path: {htpasswd}
"""


@dataclass
class RegistryServer:
    port: int
    storage: Path
    process: subprocess.Popen
    log_path: Path
    user: str | None = None
    password: str | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_data_path(self, digest: str) -> Path:
        """Where distribution keeps a blob's bytes on disk."""
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def uploads_dir(self, repository: str) -> Path:
        return self.storage / "docker/registry/v2/repositories" / repository / "_uploads"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_htpasswd(path: Path, user: str, password: str) -> None:
    bcrypt = pytest.importorskip("bcrypt")

    # cost 4 is the minimum Go's bcrypt accepts; it keeps each authenticated request cheap
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")


def start_registry(tmp: Path, *, auth: bool = False, auth_config: str = "", log_level: str = "error") -> RegistryServer:
    """`auth` turns on htpasswd; `auth_config` is any other `auth:` YAML section (token auth)."""
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    tmp = Path(tmp)
    storage = tmp / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    auth_text = auth_config
    if auth:
        htpasswd = tmp / "htpasswd"
        write_htpasswd(htpasswd, USER, PASSWORD)
        auth_text = AUTH.format(htpasswd=htpasswd)
    last_error = None
    for _ in range(3):  # a free port can be taken between probe and bind: retry
        port = free_port()
        config = tmp / "config.yml"
        config.write_text(CONFIG.format(log_level=log_level, storage=storage, port=port,
                                        secret=HTTP_SECRET, auth=auth_text))
        log_path = tmp / "registry.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        log.close()
        server = RegistryServer(port, storage, proc, log_path,
                                USER if auth else None, PASSWORD if auth else None)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = requests.get(f"{server.url}/v2/", timeout=1)
                if r.status_code in (200, 401):
                    return server
            except requests.ConnectionError as err:
                last_error = err
            time.sleep(0.05)
        server.stop()
        last_error = log_path.read_text(errors="replace")[-2000:] or last_error
    raise RuntimeError(f"docker-registry did not start: {last_error}")


@contextlib.contextmanager
def running_registry(tmp: Path, **kw) -> Iterator[RegistryServer]:
    server = start_registry(tmp, **kw)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[RegistryServer]:
    """An anonymous registry shared by a test module."""
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory) -> Iterator[RegistryServer]:
    """A registry with htpasswd auth (user alice / s3cret-pw) shared by a test module."""
    with running_registry(tmp_path_factory.mktemp("registry-auth"), auth=True) as server:
        yield server


def make_bundle(store, ref: str, *, model_bytes: bytes, fmt: str = "ollama", extra: bytes = b"{{ .Prompt }}") -> bytes:
    """Put a small bundle (config + model layer + one text layer) in `store` tagged `ref`; returns the manifest."""
    from modelpack import bundle as B

    model = store.write_blob(model_bytes)
    text = store.write_blob(extra)
    if fmt == "ollama":
        config = store.write_blob(B.OllamaConfig(model_family="llama", file_type="Q8_0").encode())
        raw = B.ollama_manifest(B.Descriptor(B.OLLAMA_CONFIG, *config),
                                [B.Descriptor(B.OLLAMA_MODEL, *model), B.Descriptor(B.OLLAMA_TEMPLATE, *text)])
    else:
        config = store.write_blob(B.ModelPackConfig(name="m", family="llama").encode())
        raw = B.modelpack_manifest(
            B.Descriptor(B.MODELPACK_CONFIG, *config),
            [B.Descriptor(B.MODELPACK_WEIGHT, *model, {B.MODELPACK_FILEPATH: "model.gguf"}),
             B.Descriptor(B.MODELPACK_WEIGHT_CONFIG, *text, {B.MODELPACK_FILEPATH: "template.jinja"})])
    store.put_manifest(ref, raw)
    return raw
