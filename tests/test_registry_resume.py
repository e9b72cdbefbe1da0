"""A push killed midway resumes from the last byte the registry confirmed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from modelpack.cli import main
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
    def __init__(self, description):
        self.description = description

    def advance(self, n=1):
        if self.description is not None:  # first call: the offset this blob starts from
            with open(counter + ".starts", "a") as f:
                f.write(f"{self.description} {n}\\n")
            self.description = None
        sent[0] += n
        with open(counter, "w") as f:
            f.write(str(sent[0]))
        time.sleep(0.008 * n / (1 << 20))

class Progress:
    @contextlib.contextmanager
    def task(self, description, total, unit="B"):
        yield Task(description)

with graceful_interrupt() as stop:
    try:
        push(ref, store=Store(home), insecure=True, chunk_size=%d, progress=Progress(), stop=stop)
    except KeyboardInterrupt:
        sys.exit(130)
""" % CHUNK


def start_child(tmp_path: Path, ref: str, home: Path) -> tuple[subprocess.Popen, Path]:
    counter = tmp_path / "sent"
    counter.write_text("0")
    Path(f"{counter}.starts").unlink(missing_ok=True)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), ref, str(home), str(counter)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, counter


def read_count(counter: Path) -> int:
    text = counter.read_text()
    return int(text) if text else 0  # a kill may land mid-write


def wait_for_bytes(proc, counter: Path, at_least: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if read_count(counter) >= at_least:
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


def blob_start_offset(proc, counter: Path, digest: str) -> int:
    """The offset the child push started `digest` from (its first progress report for that blob)."""
    starts = Path(f"{counter}.starts")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = starts.read_text().splitlines() if starts.exists() else []
        for line in lines:
            description, _, n = line.rpartition(" ")
            if description == f"push {digest[7:19]}":
                return int(n)
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.005)
    raise AssertionError("the child push did not start the blob")


def upload_uuid(location: str) -> str:
    return location.split("?")[0].rstrip("/").rpartition("/")[2]


def settled_size(path: Path) -> int:
    """The file's size once the registry has stopped writing it (the killed child's socket may
    still hold bytes on their way in)."""
    sizes = [-1]
    while len(sizes) < 6 or len(set(sizes[-6:])) > 1:
        time.sleep(0.05)
        sizes.append(path.stat().st_size)
    return sizes[-1]


KILLS = 4


def test_sigkill_at_random_points(tmp_path, registry, bundle, monkeypatch, capsys):
    """SIGKILL the push at random points, several times over, resuming each time.

    After each kill the registry's disk says what the next run must do: when its upload holds
    exactly the bytes it confirmed, resume from there and send none of them again; when it holds
    more (the kill fell inside a PATCH, before its answer), distribution refuses the session on the
    next request (ResumeBlobUpload in registry/handlers/blobupload.go) and that blob must start
    over, saying why. With the child's 1 MiB PATCHes the kill usually lands after the whole body
    went out and before the answer came: the registry then holds one unconfirmed chunk.
    """
    ref, home, raw = bundle
    digest = model_layer(raw)["digest"]
    state_path = session_path(home, registry.host, "resume/big", digest)
    rng = random.Random()
    expect = ("fresh", 0, "")  # what the next run must do: (kind, offset, the killed session's location)
    seen, kills = set(), []
    for _ in range(KILLS):
        proc, counter = start_child(tmp_path, ref, home)
        start = blob_start_offset(proc, counter, digest)
        assert start == (expect[1] if expect[0] == "resume" else 0), expect
        if expect[0] == "restart":  # the registry refuses the killed session for good
            answer = requests.get(expect[2], timeout=10)
            assert answer.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        wait_for_bytes(proc, counter, read_count(counter) + rng.randint(3 << 20, 12 << 20))
        proc.kill()
        proc.wait(30)
        if not state_path.exists():  # killed before the registry confirmed a byte of a new session
            expect = ("fresh", 0, "")
            kills.append("fresh: killed before the first confirmed PATCH")
            continue
        state = json.loads(state_path.read_text())
        held = settled_size(registry.uploads_dir("resume/big") / upload_uuid(state["location"]) / "data")
        assert held >= state["offset"]  # every confirmed byte is on the registry's disk
        expect = ("resume" if held == state["offset"] else "restart", state["offset"], state["location"])
        seen.add(expect[0])
        kills.append(f"{expect[0]}: registry holds {held - state['offset']} bytes past the confirmed {state['offset']}")

    monkeypatch.setenv("MODELPACK_HOME", str(home))
    capsys.readouterr()
    assert main(["push", ref, "--insecure", "--json", "--chunk-size", str(CHUNK)]) == 0
    result = json.loads(capsys.readouterr().out)
    print("\n".join(kills))  # shown with -rP: where the kills fell
    model = next(b for b in result["blobs"] if b["digest"] == digest)
    kind, offset, _ = expect
    if kind == "resume":
        assert model["action"] == "resumed" and model["resumed_from"] == offset
        assert model["bytes_sent"] == BLOB - offset and model["resent_bytes"] == 0  # nothing confirmed sent twice
    elif kind == "restart":
        assert model["action"] == "restarted" and model["bytes_sent"] == BLOB
        assert model["resent_bytes"] == offset
        assert model["restart_reason"].startswith("BLOB_UPLOAD_INVALID: ")
        assert "past the offset it last confirmed" in model["restart_reason"]
    else:
        assert model["action"] == "uploaded" and model["bytes_sent"] == BLOB
    if "restart" in seen:  # the registry's own account of why it dropped the session
        assert "upload resumed at wrong off" in registry.log_path.read_text(errors="replace")
    fresh = Store(tmp_path / "fresh")
    assert pull(ref, store=fresh, insecure=True).manifest_digest == result["manifest_digest"]
    assert fresh.get_manifest(ref)[0] == raw
    assert fresh.blob_path(digest).read_bytes() == Store(home).blob_path(digest).read_bytes()
