"""Push blobs and manifests: HEAD, cross-repo mount, POST + PATCH chunks + PUT ?digest=.

Resumable: after every chunk the registry confirms, the upload URL and offset are saved in
$MODELPACK_HOME/uploads/<key>.json (key: registry, repository, digest). A later push of the
same blob asks the registry for the confirmed range (GET on the upload URL) and sends only the
rest. SIGINT/SIGTERM under `graceful_interrupt()` finish the chunk in flight first, so such a
push always resumes exactly.

A hard stop inside a PATCH (SIGKILL, power loss, a cut connection) is different on CNCF
distribution (Docker Registry 2.x/3.x, and registries built on it): the registry keeps what
arrived of that PATCH body, so its upload outgrows the offset signed into the `_state` of the
last Location the client was given. Every request on an upload, the status GET included, is
first checked against that offset, and a mismatch is refused for good with BLOB_UPLOAD_INVALID
(registry/handlers/blobupload.go, ResumeBlobUpload: `upload.Size() != State.Offset`, then
`upload.Cancel`); without `_state` the answer is BLOB_UPLOAD_INVALID too, with no size. `_state`
is HMAC-signed with the registry's secret, so no client can get one for the size the registry
really holds. That blob then starts over, and the result says so (`action="restarted"`,
`restart_reason`, `resent_bytes`). Registries whose status GET reports the size they hold
resume from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from modelpack.errors import DigestMismatchError, NotFoundError, ProtocolError, RegistryError
from modelpack.progress import Progress, Task, or_null
from modelpack.registry.client import MANIFEST_TYPES, RegistryClient, registry_error_detail, repository_scope
from modelpack.registry.state import known_sources, load_session, remember_sources, save_session, session_path
from modelpack.store import sha256_digest

# Bytes per PATCH, when not fixed by the caller: sized so that one PATCH takes about
# CHUNK_SECONDS at the speed the previous one went. Each PATCH boundary costs a round trip and
# the registry's flush, so fast links get big chunks; slow links get small ones, so that a
# graceful stop (which finishes the chunk in flight) comes quickly.
MIN_CHUNK = 16 << 20
MAX_CHUNK = 1 << 30
CHUNK_SECONDS = 2.0
PIECE = 1 << 20  # bytes per read/send inside one PATCH
RING = 4  # pieces in flight between reading, hashing and sending
MAX_RECOVERIES = 8  # failed PATCHes (cut connection, expired token, 5xx) survived per blob
RECOVERABLE = frozenset({None, 400, 401, 404, 416, 500, 502, 503, 504})
OCTET = "application/octet-stream"

# registry error code when it refuses a saved upload session -> why the blob starts over
SESSION_GONE: dict[str, str] = {
    "BLOB_UPLOAD_INVALID": (
        "the registry refused the saved upload session: it holds bytes past the offset it last "
        "confirmed (the push was killed or lost its connection inside a PATCH, before the answer "
        "arrived) and CNCF distribution never continues such a session (ResumeBlobUpload in "
        "registry/handlers/blobupload.go)"),
    "BLOB_UPLOAD_UNKNOWN": "the registry no longer knows the upload session (expired, purged or cancelled)",
    "RANGE_INVALID": "the registry refused the saved upload offset (RANGE_INVALID)",
}


@dataclass
class BlobPush:
    digest: str
    size: int
    action: str  # exists | mounted | uploaded | resumed | restarted
    bytes_sent: int = 0
    resumed_from: int = 0
    restarts: int = 0  # times the registry lost the session and the blob started over
    restart_reason: str = ""  # why, in the registry's terms, when it did
    resent_bytes: int = 0  # bytes the registry had confirmed and then dropped, so sent again


@dataclass
class PushResult:
    ref: str
    manifest_digest: str
    media_type: str
    blobs: list[BlobPush] = field(default_factory=list)

    @property
    def bytes_sent(self) -> int:
        return sum(b.bytes_sent for b in self.blobs)

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes_sent": self.bytes_sent}


# ---- one blob -----------------------------------------------------------------------------------
def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _confirmed_end(resp: requests.Response, expected: int) -> int:
    """Offset after the last byte the registry holds, from its `Range: 0-<last>` header."""
    value = resp.headers.get("Range", "")
    if not value:
        return expected
    try:
        last = int(value.rpartition("-")[2])
    except ValueError:
        raise ProtocolError(f"bad Range header {value!r} in upload answer", url=resp.url.split("?")[0]) from None
    # distribution answers '0-0' for an empty upload as well as for one byte
    return expected if last == 0 and expected <= 1 else last + 1


class _BackgroundHasher:
    """sha256 fed by one worker thread (hashlib drops the GIL), so hashing overlaps sending."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.hash = hashlib.sha256()
        self._pool = pool
        self._last: Future | None = None

    def update(self, data) -> Future:
        self._last = self._pool.submit(self.hash.update, data)  # one worker: updates stay in order
        return self._last

    def hexdigest(self) -> str:
        if self._last is not None:
            self._last.result()
        return self.hash.hexdigest()


class _NoHasher:
    """Stands in when the digest is known and the caller leaves checking it to the registry."""

    def update(self, data) -> None:
        return None


class _ChunkBody:
    """A PATCH body: `length` bytes of `f` from its position, hashed and counted as sent.

    Pieces are read into a small ring of buffers; a buffer is reused only once its hash
    update is done, so memory stays at RING pieces whatever the chunk size.
    """

    def __init__(self, f, length: int, hasher: _BackgroundHasher, task: Task, sent: list[int]) -> None:
        self.f, self.length, self.hasher, self.task, self.sent = f, length, hasher, task, sent

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        ring = [memoryview(bytearray(min(PIECE, self.length) or 1)) for _ in range(RING)]
        pending: list[Future | None] = [None] * RING
        left, k = self.length, 0
        while left:
            slot = k % RING
            k += 1
            if pending[slot] is not None:
                pending[slot].result()
            n = self.f.readinto(ring[slot][: min(PIECE, left)])
            if not n:
                raise DigestMismatchError("local blob is shorter than its descriptor says", path=self.f.name)
            piece = ring[slot][:n]
            pending[slot] = self.hasher.update(piece)
            yield piece
            left -= n
            self.sent[0] += n
            self.task.advance(n)


@dataclass
class _Session:
    """An upload in progress: where to send the next byte and how many the registry holds."""

    location: str
    offset: int
    size: int
    state_path: Path
    digest: str | None

    def save(self, host: str, repository: str) -> None:
        save_session(self.state_path, host=host, repository=repository, digest=self.digest,
                     location=self.location, offset=self.offset, size=self.size)


class _NoTask:
    def advance(self, n: int = 1) -> None:
        pass


class BlobUploader:
    """Uploads one local file as a blob of `repository`, resuming a saved session if any."""

    def __init__(self, client: RegistryClient, repository: str, *, home: Path, chunk_size: int | None = None,
                 stop: threading.Event | None = None, verify_local: bool = True) -> None:
        self.client = client
        # hash what is sent and compare before the PUT; without it the registry's own check of
        # PUT ?digest= still refuses corrupt bytes, at no client CPU
        self.verify_local = verify_local
        self.repository = repository
        self.home = Path(home)
        self.chunk_size = max(int(chunk_size), 1) if chunk_size else None  # None: adaptive
        self._adaptive_chunk = MIN_CHUNK
        self.stop = stop or threading.Event()
        self.scope = repository_scope(repository, "pull,push")

    def exists(self, digest: str) -> bool:
        resp = self.client.request("HEAD", f"/v2/{self.repository}/blobs/{digest}", scope=self.scope, ok=(200, 404))
        resp.close()
        return resp.status_code == 200

    def _start(self, digest: str, mount_from: list[str]) -> tuple[str | None, bool]:
        """POST a new upload; returns (upload URL, mounted)."""
        path = f"/v2/{self.repository}/blobs/uploads/"
        for source in mount_from:
            if source == self.repository:
                continue
            scope = f"{self.scope} {repository_scope(source, 'pull')}"
            try:
                resp = self.client.request("POST", _with_query(path, mount=digest, **{"from": source}),
                                           scope=scope, ok=(201, 202))
            except RegistryError:
                continue  # no access to the source: upload instead
            resp.close()
            if resp.status_code == 201:
                return None, True
            return urljoin(resp.url, resp.headers["Location"]), False
        resp = self.client.request("POST", path, scope=self.scope, ok=(202,))
        resp.close()
        if "Location" not in resp.headers:
            raise ProtocolError("upload start answered without a Location", url=resp.url)
        return urljoin(resp.url, resp.headers["Location"]), False

    def _status(self, location: str, expected: int) -> tuple[str, int] | str:
        """How much of an upload the registry holds: (location, offset), or why the session is gone."""
        resp = self.client.request("GET", location, scope=self.scope, ok=(204, 400, 404, 416))
        resp.close()
        if resp.status_code != 204:
            code = registry_error_detail(resp).partition(":")[0] or f"HTTP {resp.status_code}"
            return f"{code}: " + SESSION_GONE.get(code, "the registry refused the saved upload session")
        new_location = urljoin(resp.url, resp.headers.get("Location", location))
        return new_location, _confirmed_end(resp, expected)

    def upload(self, path: str | os.PathLike, *, digest: str | None = None, size: int | None = None,
               mount_from: list[str] = (), task: Task | None = None) -> BlobPush:
        """Push the file at `path`; `digest` None means: compute it while sending."""
        path = Path(path)
        size = path.stat().st_size if size is None else size
        task = task or _NoTask()
        if digest is not None and self.exists(digest):
            task.advance(size)
            return BlobPush(digest, size, "exists")
        state_path = session_path(self.home, self.client.host, self.repository, digest or f"file:{path}")
        saved = load_session(state_path)
        result = BlobPush(digest or "", size, "uploaded")
        location, offset = None, 0
        if saved and saved.get("size") == size:
            status = self._status(saved["location"], saved.get("offset", 0))
            if isinstance(status, tuple):
                location, offset = status
                result.action, result.resumed_from = "resumed", offset
            else:  # the registry dropped the session: this blob starts over
                result.action, result.restart_reason = "restarted", status
                result.resent_bytes = saved.get("offset", 0)
                state_path.unlink(missing_ok=True)
        if location is None:
            if digest is not None:
                location, mounted = self._start(digest, list(mount_from))
                if mounted:
                    task.advance(size)
                    return BlobPush(digest, size, "mounted")
            else:
                location, _ = self._start("", [])
        session = _Session(location, offset, size, state_path, digest)
        sent = [0]
        task.advance(offset)
        recoveries = 0
        hashing = self.verify_local or digest is None
        with open(path, "rb") as f, ThreadPoolExecutor(1, thread_name_prefix="modelpack-sha256") as pool:
            hasher = _hash_prefix(f, offset, pool) if hashing else _seek(f, offset)
            while True:
                try:
                    self._send(f, session, hasher, task, sent)
                    break
                except RegistryError as err:
                    if err.status not in RECOVERABLE or recoveries >= MAX_RECOVERIES:
                        raise
                    recoveries += 1
                    time.sleep(self.client.backoff * recoveries)
                    read_to = f.tell()
                    status = self._status(session.location, session.offset)
                    if isinstance(status, tuple):
                        session.location, session.offset = status
                    else:  # the session is gone: this blob starts over
                        result.restarts += 1
                        result.restart_reason, result.resent_bytes = status, result.resent_bytes + session.offset
                        session.location, _ = self._start(digest or "", [])
                        session.offset = 0
                    task.advance(session.offset - read_to)
                    hasher = _hash_prefix(f, session.offset, pool) if hashing else _seek(f, session.offset)
            computed = "sha256:" + hasher.hexdigest() if hashing else digest
        if digest is not None and computed != digest:
            self._cancel(session.location)
            state_path.unlink(missing_ok=True)
            raise DigestMismatchError(f"local blob hashes to {computed}", path=str(path), digest=digest)
        try:
            self.client.request("PUT", _with_query(session.location, digest=computed), scope=self.scope,
                                ok=(201, 204)).close()
        except RegistryError as err:
            # a retried PUT finds its session already committed: the blob is there
            if err.status != 404 or not self.exists(computed):
                raise
        state_path.unlink(missing_ok=True)
        result.digest, result.bytes_sent = computed, sent[0]
        return result

    def _send(self, f, session: "_Session", hasher, task: Task, sent: list[int]) -> None:
        """PATCH chunks from the session's offset to the end, saving the session after each."""
        while session.offset < session.size:
            if self.stop.is_set():
                raise KeyboardInterrupt("push interrupted; run it again to resume")
            offset = session.offset
            n = min(self.chunk_size or self._adaptive_chunk, session.size - offset)
            body = _ChunkBody(f, n, hasher, task, sent)
            started = time.monotonic()
            resp = self.client.request(
                "PATCH", session.location, scope=self.scope, ok=(202, 204), retry=False, data=body,
                headers={"Content-Type": OCTET, "Content-Range": f"{offset}-{offset + n - 1}"},
            )
            resp.close()
            location = urljoin(resp.url, resp.headers.get("Location", session.location))
            confirmed = _confirmed_end(resp, offset + n)
            if confirmed != offset + n:
                raise ProtocolError(f"registry confirmed {confirmed} bytes, expected {offset + n}",
                                    url=resp.url.split("?")[0])
            session.location, session.offset = location, confirmed
            session.save(self.client.host, self.repository)
            rate = n / max(time.monotonic() - started, 1e-3)
            self._adaptive_chunk = int(min(MAX_CHUNK, max(MIN_CHUNK, rate * CHUNK_SECONDS)))

    def _cancel(self, location: str) -> None:
        with contextlib.suppress(RegistryError):
            self.client.request("DELETE", location, scope=self.scope, ok=(202, 204, 404)).close()


def _seek(f, offset: int) -> _NoHasher:
    f.seek(offset)
    return _NoHasher()


def _hash_prefix(f, offset: int, pool: ThreadPoolExecutor) -> _BackgroundHasher:
    """A hasher over the file's first `offset` bytes, leaving `f` positioned at `offset`."""
    hasher = _BackgroundHasher(pool)
    f.seek(0)
    left = offset
    while left:
        data = f.read(min(PIECE * 8, left))
        if not data:
            raise DigestMismatchError("local blob is shorter than the registry's upload", path=f.name)
        hasher.hash.update(data)
        left -= len(data)
    return hasher


# ---- manifests and whole bundles ----------------------------------------------------------------
def manifest_media_type(doc: dict) -> str:
    """The Content-Type a manifest is PUT with."""
    if doc.get("mediaType"):
        return doc["mediaType"]
    config_type = (doc.get("config") or {}).get("mediaType", "")
    if doc.get("artifactType") or not config_type.startswith("application/vnd.docker."):
        return MANIFEST_TYPES["oci"]
    return MANIFEST_TYPES["docker"]


def put_manifest(client: RegistryClient, repository: str, reference: str, raw: bytes, media_type: str) -> str:
    """PUT a manifest; returns its digest (checked against the registry's)."""
    digest = sha256_digest(raw)
    resp = client.request("PUT", f"/v2/{repository}/manifests/{reference}",
                          scope=repository_scope(repository, "pull,push"), ok=(201, 200, 204), data=raw,
                          headers={"Content-Type": media_type})
    resp.close()
    answered = resp.headers.get("Docker-Content-Digest")
    if answered and answered != digest:
        raise ProtocolError(f"registry stored the manifest as {answered}", url=resp.url, digest=digest)
    return digest


def manifest_descriptors(doc: dict) -> list[dict]:
    """config first, then layers: every blob a manifest names."""
    descs = []
    if doc.get("config"):
        descs.append(doc["config"])
    descs.extend(doc.get("layers") or [])
    return descs


def push(
    ref,
    dest=None,
    *,
    store=None,
    insecure: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    client: RegistryClient | None = None,
    verify_local: bool = True,
) -> PushResult:
    """Push the local model `ref` to `dest` (default: `ref` itself) as `host/namespace/model:tag`.

    Either name may pin a manifest with `@sha256:<hex>`: the source is then the local manifest
    with that digest (under its tag, or any tag of that model), and a pinned destination is
    pushed by digest, untagged.

    `chunk_size` fixes the bytes per PATCH (default: adaptive, about CHUNK_SECONDS per PATCH).
    """
    from modelpack.names import parse_ref
    from modelpack.registry.auth import get_credentials
    from modelpack.store import Store

    src = parse_ref(str(ref), allow_digest=True)
    dst = parse_ref(str(dest), allow_digest=True) if dest is not None else src
    store = store if store is not None else Store()
    raw, doc = _local_manifest(store, src)
    if dst.digest and dst.digest != sha256_digest(raw):
        raise DigestMismatchError(f"model {src.short} is not the manifest {dst} names", digest=dst.digest)
    descriptors = manifest_descriptors(doc)
    paths = []
    for desc in descriptors:  # everything is checked locally before the first request
        if not store.has_blob(desc["digest"]):
            raise NotFoundError(f"model {src.short} references a blob missing from the store", digest=desc["digest"])
        paths.append(store.blob_path(desc["digest"]))
    client = client or RegistryClient(dst.host, insecure=insecure, credentials=get_credentials(dst.host))
    uploader = BlobUploader(client, dst.repository, home=store.home, chunk_size=chunk_size, stop=stop,
                            verify_local=verify_local)
    progress = or_null(progress)
    media_type = manifest_media_type(doc)
    result = PushResult(str(dst), "", media_type)
    for desc, path in zip(descriptors, paths):
        digest, size = desc["digest"], int(desc["size"])
        sources = known_sources(store.home, dst.host, digest)
        if src.host == dst.host and src.repository != dst.repository:
            sources.insert(0, src.repository)
        with progress.task(f"push {digest[7:19]}", size) as task:
            result.blobs.append(uploader.upload(path, digest=digest, size=size, mount_from=sources, task=task))
    # a destination pinned by digest is pushed by digest (untagged), as OCI clients do
    result.manifest_digest = put_manifest(client, dst.repository, dst.digest or dst.tag, raw, media_type)
    remember_sources(store.home, dst.host, dst.repository, [d["digest"] for d in descriptors])
    return result


def _local_manifest(store, src) -> tuple[bytes, dict]:
    """The local manifest `src` names; with `src.digest`, the one of that model with that digest."""
    if not src.digest:
        return store.get_manifest(src)
    if store.has_manifest(src):
        raw, doc = store.get_manifest(src)
        if sha256_digest(raw) == src.digest:
            return raw, doc
    for entry in store.list():
        if entry.digest == src.digest and entry.ref.parts()[:3] == src.parts()[:3]:
            return store.get_manifest(entry.ref)
    raise NotFoundError(f"no local manifest of {src.host}/{src.repository} has that digest", digest=src.digest)
