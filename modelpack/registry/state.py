"""Small persistent state for resumable transfers, under $MODELPACK_HOME/uploads/.

    <key>.json     one upload session: registry, repository, digest, upload URL, confirmed offset
    sources.json   registry -> digest -> repositories known to hold it (for cross-repo mounts)

plus `graceful_interrupt()`, which turns the first SIGINT/SIGTERM into a request to stop at the
next chunk boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
from pathlib import Path
from typing import Iterator

from modelpack.fsutil import write_bytes_atomic


def _uploads_dir(home: Path) -> Path:
    return Path(home) / "uploads"


def session_path(home: Path, host: str, repository: str, digest: str) -> Path:
    key = hashlib.sha256(f"{host}/{repository}@{digest}".encode()).hexdigest()[:40]
    return _uploads_dir(home) / f"{key}.json"


def load_session(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_session(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(state).encode())


def remember_sources(home: Path, host: str, repository: str, digests: list[str]) -> None:
    """Note that `repository` on `host` holds `digests`, for cross-repo mounts later."""
    path = _uploads_dir(home) / "sources.json"
    known = load_session(path) or {}
    per_host = known.setdefault(host, {})
    for digest in digests:
        repos = [r for r in per_host.get(digest, []) if r != repository]
        per_host[digest] = ([repository] + repos)[:8]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(known).encode())


def known_sources(home: Path, host: str, digest: str) -> list[str]:
    known = load_session(_uploads_dir(home) / "sources.json") or {}
    return list(known.get(host, {}).get(digest, []))


# ---- interruption -------------------------------------------------------------------------------
@contextlib.contextmanager
def graceful_interrupt() -> Iterator[threading.Event]:
    """First SIGINT/SIGTERM sets the event (push stops after the chunk in flight); a second aborts."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
