"""A push killed midway resumes from the last byte the registry confirmed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelpack.registry import pull, push
from modelpack.registry.state import session_path
from modelpack.store import Store
from registry_server import make_bundle, registry  # noqa: F401  (fixture)

pytestmark = pytest.mark.registry
BLOB = 64 << 20
CHUNK = 1 << 20

# The child pushes through a Progress that records the bytes handed to the socket and sleeps
# 8 ms per MiB: a slow link, so the test can stop it midway.
CHILD = """
import contextlib, sys, time
from modelpack.registry import graceful_interrupt, push
from modelpack.store import Store

ref, home, counter = sys.argv[1], sys.argv[2], sys.argv[3]
sent = [0]

class Task:
    def advance(self, n=1):
        sent[0] += n
        with open(counter, "w") as f:
            f.write(str(sent[0]))
        time.sleep(0.008 * n / (1 << 20))

class Progress:
    @contextlib.contextmanager
    def task(self, description, total, unit="B"):
        yield Task()

with graceful_interrupt() as stop:
    try:
        push(ref, store=Store(home), insecure=True, chunk_size=%d, progress=Progress(), stop=stop)
    except KeyboardInterrupt:
        sys.exit(130)
""" % CHUNK


def start_child(tmp_path: Path, ref: str, home: Path) -> tuple[subprocess.Popen, Path]:
    counter = tmp_path / "sent"
    counter.write_text("0")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), ref, str(home), str(counter)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, counter


def wait_for_bytes(proc, counter: Path, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = counter.read_text()
        if text and int(text) >= at_least:
            return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.005)
    raise AssertionError("the child push did not progress")


def model_layer(raw: bytes) -> dict:
    return json.loads(raw)["layers"][0]


def upload_data_sizes(server, repository: str) -> list[int]:
    return [p.stat().st_size for p in server.uploads_dir(repository).glob("*/data")]


@pytest.fixture
def bundle(tmp_path, registry):
    home = tmp_path / "home"
    ref = f"{registry.host}/resume/big:t{len(list(tmp_path.parent.iterdir()))}"
    raw = make_bundle(Store(home), ref, model_bytes=os.urandom(BLOB))
    return ref, home, raw


def test_sigterm_midway_resumes_without_resending(tmp_path, registry, bundle):
    ref, home, raw = bundle
    layer = model_layer(raw)
    proc, counter = start_child(tmp_path, ref, home)
    wait_for_bytes(proc, counter, 12 << 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130, proc.stderr.read().decode()
    sent_before = int(counter.read_text())  # every byte the killed push handed to the socket

    state = json.loads(session_path(home, registry.host, "resume/big", layer["digest"]).read_text())
    assert 12 << 20 <= state["offset"] < BLOB
    assert upload_data_sizes(registry, "resume/big") == [state["offset"]]  # the registry holds exactly that
    small = sum(d["size"] for d in [json.loads(raw)["config"]])  # the config went first, whole
    assert sent_before == small + state["offset"]

    result = push(ref, store=Store(home), insecure=True, chunk_size=CHUNK)
    by_digest = {b.digest: b for b in result.blobs}
    model = by_digest[layer["digest"]]
    assert model.action == "resumed" and model.resumed_from == state["offset"]
    assert model.bytes_sent == BLOB - state["offset"]  # no confirmed byte sent twice
    assert by_digest[json.loads(raw)["config"]["digest"]].action == "exists"
    assert not session_path(home, registry.host, "resume/big", layer["digest"]).exists()

    fresh = Store(tmp_path / "fresh")
    pull(ref, store=fresh, insecure=True)
    assert fresh.get_manifest(ref)[0] == raw
    assert fresh.blob_path(layer["digest"]).read_bytes() == Store(home).blob_path(layer["digest"]).read_bytes()


def test_sigkill_midway_resumes_or_restarts_only_that_blob(tmp_path, registry, bundle):
    ref, home, raw = bundle
    layer = model_layer(raw)
    proc, counter = start_child(tmp_path, ref, home)
    wait_for_bytes(proc, counter, 20 << 20)
    proc.kill()
    proc.wait(30)
    state = json.loads(session_path(home, registry.host, "resume/big", layer["digest"]).read_text())
    assert state["offset"] >= 19 << 20

    result = push(ref, store=Store(home), insecure=True, chunk_size=CHUNK)
    by_digest = {b.digest: b for b in result.blobs}
    model = by_digest[layer["digest"]]
    assert by_digest[json.loads(raw)["config"]["digest"]].action == "exists"
    if model.action == "resumed":  # the kill fell between two PATCHes
        assert model.resumed_from == state["offset"] and model.bytes_sent == BLOB - state["offset"]
    else:
        # killed inside a PATCH: distribution cancels a session whose data outgrew its last
        # confirmed offset, so this one blob starts over
        assert model.action == "restarted" and model.bytes_sent == BLOB
    fresh = Store(tmp_path / "fresh")
    assert pull(ref, store=fresh, insecure=True).manifest_digest == result.manifest_digest
    assert fresh.get_manifest(ref)[0] == raw
