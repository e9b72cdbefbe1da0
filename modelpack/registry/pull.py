"""Pull manifests and blobs; every blob's sha256 is checked before it enters the store.

Blobs download to $MODELPACK_HOME/downloads/sha256-<hex>.partial, hashed as they arrive; an
interrupted download continues with a Range request. Only a blob whose size and sha256 match
its descriptor is renamed into the store; the manifest is stored last, after all its blobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import requests
import urllib3

from modelpack.errors import DigestMismatchError, ProtocolError, RegistryError, StoreError
from modelpack.progress import Progress, Task, or_null
from modelpack.registry.client import INDEX_TYPES, MANIFEST_ACCEPT, RegistryClient, repository_scope
from modelpack.registry.push import manifest_descriptors
from modelpack.registry.state import remember_sources
from modelpack.store import sha256_digest

PIECE = 1 << 20
MAX_RECOVERIES = 8
MAX_MANIFEST = 4 << 20  # the OCI distribution spec's recommended limit


@dataclass
class BlobPull:
    digest: str
    size: int
    action: str  # exists | downloaded | resumed
    bytes_received: int = 0
    resumed_from: int = 0


@dataclass
class PullResult:
    ref: str
    manifest_digest: str
    media_type: str
    blobs: list[BlobPull] = field(default_factory=list)

    @property
    def bytes_received(self) -> int:
        return sum(b.bytes_received for b in self.blobs)

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes_received": self.bytes_received}


def fetch_manifest(client: RegistryClient, repository: str, reference: str) -> tuple[bytes, dict, str, str]:
    """GET a manifest by tag or digest; returns (raw, doc, media type, digest)."""
    resp = client.request("GET", f"/v2/{repository}/manifests/{reference}", scope=repository_scope(repository),
                          headers={"Accept": MANIFEST_ACCEPT}, stream=True)
    with contextlib.closing(resp):
        raw = resp.raw.read(MAX_MANIFEST + 1, decode_content=True)
    if len(raw) > MAX_MANIFEST:
        raise ProtocolError(f"manifest larger than {MAX_MANIFEST} bytes", url=resp.url.split("?")[0])
    digest = sha256_digest(raw)
    url = resp.url.split("?")[0]
    answered = resp.headers.get("Docker-Content-Digest")
    if reference.startswith("sha256:") and digest != reference:
        raise DigestMismatchError(f"manifest hashes to {digest}", url=url, digest=reference)
    if answered and answered != digest:
        raise DigestMismatchError(f"manifest hashes to {digest}, the registry says {answered}", url=url)
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ProtocolError("manifest is not JSON", url=url) from None
    media_type = doc.get("mediaType") or resp.headers.get("Content-Type", "").split(";")[0]
    if media_type in INDEX_TYPES or "manifests" in doc:
        raise ProtocolError("this is an image index, not a model manifest", url=url)
    for desc in manifest_descriptors(doc):
        if not isinstance(desc, dict) or not str(desc.get("digest", "")).startswith("sha256:") \
                or not isinstance(desc.get("size"), int):
            raise ProtocolError("manifest has a descriptor without a sha256 digest and size", url=url)
    return raw, doc, media_type, digest


class BlobDownloader:
    def __init__(self, client: RegistryClient, repository: str, store) -> None:
        self.client = client
        self.repository = repository
        self.store = store
        self.scope = repository_scope(repository)
        self.downloads = Path(store.home) / "downloads"

    def download(self, digest: str, size: int, task: Task) -> BlobPull:
        if self.store.has_blob(digest):
            task.advance(size)
            return BlobPull(digest, size, "exists")
        self.downloads.mkdir(parents=True, exist_ok=True)
        partial = self.downloads / f"sha256-{digest[7:]}.partial"
        url = f"/v2/{self.repository}/blobs/{digest}"
        with open(partial, "ab+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError("another pull is downloading this blob", path=str(partial), digest=digest) from None
            offset = f.seek(0, os.SEEK_END)
            if offset > size:
                f.truncate(0)
                offset = 0
            result = BlobPull(digest, size, "resumed" if offset else "downloaded", resumed_from=offset)
            hasher = _hash_file_prefix(f, offset)
            task.advance(offset)
            recoveries = 0
            while offset < size:
                try:
                    offset, hasher = self._fetch(url, f, offset, size, hasher, task, result)
                except RegistryError as err:
                    if err.status not in (None, 500, 502, 503, 504) or recoveries >= MAX_RECOVERIES:
                        raise
                    recoveries += 1
                    time.sleep(self.client.backoff * recoveries)
                    offset = f.seek(0, os.SEEK_END)  # keep what arrived; hash it again from the file
                    hasher = _hash_file_prefix(f, offset)
            computed = "sha256:" + hasher.hexdigest()
            if offset != size or computed != digest:
                f.truncate(0)
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
                raise DigestMismatchError(f"downloaded blob ({offset} bytes) hashes to {computed}; nothing stored",
                                          url=self.client.url(url), digest=digest)
            f.flush()
            os.fsync(f.fileno())
            with self.store.writing():
                os.chmod(partial, 0o644)
                target = self.store.blob_path(digest)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(partial, target)
        return result

    def _fetch(self, url: str, f, offset: int, size: int, hasher, task: Task, result: BlobPull):
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.client.request("GET", url, scope=self.scope, ok=(200, 206), headers=headers, stream=True)
        with contextlib.closing(resp):
            if resp.status_code == 200 and offset:  # the server ignored Range: start over
                task.advance(-offset)
                f.truncate(0)
                offset = 0
                hasher = hashlib.sha256()
            elif resp.status_code == 206 and not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise ProtocolError(f"asked for bytes from {offset}, got {resp.headers.get('Content-Range')!r}",
                                    url=resp.url.split("?")[0])
            f.seek(offset)
            try:
                for piece in resp.raw.stream(PIECE, decode_content=False):
                    if offset + len(piece) > size:
                        raise DigestMismatchError(f"blob is larger than its descriptor's {size} bytes",
                                                  url=resp.url.split("?")[0], digest=result.digest)
                    f.write(piece)
                    hasher.update(piece)
                    offset += len(piece)
                    result.bytes_received += len(piece)
                    task.advance(len(piece))
            except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                    ConnectionError, TimeoutError) as err:
                f.flush()  # keep what arrived: the next request asks for the rest
                raise RegistryError(f"download cut off at byte {offset}: {type(err).__name__}",
                                    url=resp.url.split("?")[0]) from err
        f.flush()
        return offset, hasher


def _hash_file_prefix(f, offset: int):
    hasher = hashlib.sha256()
    f.seek(0)
    left = offset
    while left:
        data = f.read(min(8 * PIECE, left))
        if not data:
            break
        hasher.update(data)
        left -= len(data)
    return hasher


def pull(
    ref,
    *,
    store=None,
    insecure: bool = False,
    progress: Progress | None = None,
    client: RegistryClient | None = None,
) -> PullResult:
    """Pull `host/namespace/model[:tag][@sha256:<hex>]` into the local store; the tag is written last.

    With a digest, the manifest fetched is the one with that digest, stored under the tag
    (default `latest`).
    """
    from modelpack.names import parse_ref
    from modelpack.registry.auth import get_credentials
    from modelpack.store import Store

    dst = parse_ref(str(ref), allow_digest=True)
    store = store if store is not None else Store()
    client = client or RegistryClient(dst.host, insecure=insecure, credentials=get_credentials(dst.host))
    # by digest, the manifest bytes must hash to it (fetch_manifest checks) whatever the tag says
    raw, doc, media_type, manifest_digest = fetch_manifest(client, dst.repository, dst.digest or dst.tag)
    dst = replace(dst, digest="")  # the local name it is stored under
    downloader = BlobDownloader(client, dst.repository, store)
    progress = or_null(progress)
    result = PullResult(str(dst), manifest_digest, media_type)
    descriptors = manifest_descriptors(doc)
    for desc in descriptors:
        with progress.task(f"pull {desc['digest'][7:19]}", int(desc["size"])) as task:
            result.blobs.append(downloader.download(desc["digest"], int(desc["size"]), task))
    store.put_manifest(dst, raw)
    remember_sources(store.home, dst.host, dst.repository, [d["digest"] for d in descriptors])
    return result
