"""The local content-addressed store, in Ollama's layout.

    $MODELPACK_HOME/blobs/sha256-<hex>                         content, named by its sha256
    $MODELPACK_HOME/manifests/<host>/<namespace>/<model>/<tag>  a tag: the manifest JSON

so `OLLAMA_MODELS=$MODELPACK_HOME ollama serve` finds our models. Everything is written to a
hidden temporary name in the same directory and renamed into place, so a killed process
leaves at most a hidden `.tmp-*` file that nothing reads and `gc` removes.

Writers (builds, pulls) hold a shared flock on `$MODELPACK_HOME/.lock` while they work;
`gc` deletes blobs only when it gets the exclusive lock, so it never removes a blob that a
running build has written but not yet tagged. The kernel drops the lock of a killed process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Iterator, NamedTuple

from modelpack.errors import DigestMismatchError, NotFoundError, StoreError
from modelpack.names import ModelRef, parse_ref

DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
TMP_PREFIX = ".tmp-"
CHUNK = 1 << 20


def default_home() -> Path:
    env = os.environ.get("MODELPACK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".modelpack"


def digest_hex(digest: str) -> str:
    """The hex part of 'sha256:<hex>' (or Ollama's file form 'sha256-<hex>')."""
    m = DIGEST_RE.match(str(digest))
    if not m:
        raise StoreError(f"not a sha256 digest: {digest!r}", digest=str(digest))
    return m.group(1)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def as_ref(ref: ModelRef | str) -> ModelRef:
    return ref if isinstance(ref, ModelRef) else parse_ref(ref)


class StoreEntry(NamedTuple):
    ref: ModelRef
    digest: str  # sha256 of the manifest bytes
    size: int  # config + layers
    modified: float  # manifest mtime, seconds since the epoch


class BlobWriter:
    """A write-only binary file that hashes what passes through it.

    After the `Store.blob_writer` block ends, `.digest` and `.size` describe the stored blob
    and `.path` is where it lies.
    """

    def __init__(self, f, tmp_path: Path) -> None:
        self._f = f
        self._hash = hashlib.sha256()
        self.tmp_path = tmp_path
        self.size = 0
        self.digest: str | None = None
        self.path: Path | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._f.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        """Closing early is harmless; the store finishes the blob when the block ends."""

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Store:
    def __init__(self, home: str | os.PathLike | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.blobs = self.home / "blobs"
        self.manifests = self.home / "manifests"

    # ---- locking -------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the shared writer lock: gc will not delete blobs meanwhile."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # ---- blobs ---------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / f"sha256-{digest_hex(digest)}"

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def _tmp_file(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.partial"
        path = directory / name
        return path, open(path, "xb")

    @contextlib.contextmanager
    def blob_writer(self, expected_digest: str | None = None) -> Iterator[BlobWriter]:
        """Yield a file to write one blob into; it is hashed as it is written.

        On success the temp file is fsynced and renamed to blobs/sha256-<hex> (or dropped if
        that blob already exists). If `expected_digest` is given and differs, nothing is stored
        and DigestMismatchError is raised. On any error the temp file is removed.
        """
        expected_hex = digest_hex(expected_digest) if expected_digest else None
        with self.writing():
            tmp, f = self._tmp_file(self.blobs)
            writer = BlobWriter(f, tmp)
            try:
                with f:
                    yield writer
                    f.flush()
                    os.fsync(f.fileno())
                hexdigest = writer.hexdigest()
                if expected_hex is not None and hexdigest != expected_hex:
                    raise DigestMismatchError(
                        f"content hashes to sha256:{hexdigest}", digest=f"sha256:{expected_hex}"
                    )
                final = self.blobs / f"sha256-{hexdigest}"
                if final.is_file() and final.stat().st_size == writer.size:
                    os.unlink(tmp)
                    os.utime(final)
                else:
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, final)
                writer.digest = f"sha256:{hexdigest}"
                writer.path = final
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def write_blob(self, data: bytes) -> tuple[str, int]:
        """Store `data`; returns (digest, size). Existing blobs are not rewritten."""
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if path.is_file() and path.stat().st_size == len(data):
            os.utime(path)
            return digest, len(data)
        with self.blob_writer(expected_digest=digest) as w:
            w.write(data)
        return digest, len(data)

    def import_file(self, path: str | os.PathLike, progress_task=None) -> tuple[str, int]:
        """Copy a file into the store, hashing as it copies; returns (digest, size)."""
        with open(path, "rb") as src, self.blob_writer() as w:
            while chunk := src.read(CHUNK):
                w.write(chunk)
                if progress_task is not None:
                    progress_task.advance(len(chunk))
        return w.digest, w.size

    def read_blob(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError("blob not in the store", digest=digest, path=str(path)) from None

    def open_blob(self, digest: str):
        path = self.blob_path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError("blob not in the store", digest=digest, path=str(path)) from None

    def verify_blob(self, digest: str) -> None:
        """Re-hash a stored blob; DigestMismatchError if it changed on disk."""
        h = hashlib.sha256()
        with self.open_blob(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        if h.hexdigest() != digest_hex(digest):
            raise DigestMismatchError(
                f"stored blob hashes to sha256:{h.hexdigest()}", digest=digest, path=str(self.blob_path(digest))
            )

    # ---- manifests -----------------------------------------------------------------
    def manifest_path(self, ref: ModelRef | str) -> Path:
        r = as_ref(ref)
        return self.manifests.joinpath(r.host, r.namespace, r.model, r.tag)

    def has_manifest(self, ref: ModelRef | str) -> bool:
        return self.manifest_path(ref).is_file()

    def put_manifest(self, ref: ModelRef | str, raw: bytes) -> str:
        """Tag `ref` with the manifest `raw` (atomic); returns the manifest digest.

        Every blob the manifest references must already be in the store.
        """
        from modelpack.bundle import manifest_blobs

        try:
            doc = json.loads(raw)
        except ValueError as err:
            raise StoreError(f"manifest for {ref} is not JSON: {err}") from None
        for digest in manifest_blobs(doc):
            if not self.has_blob(digest):
                raise NotFoundError(f"manifest for {ref} references a missing blob", digest=digest)
        final = self.manifest_path(ref)
        with self.writing():
            # the temp file sits in manifests/ itself, outside the host/namespace/model/tag
            # depth that Ollama globs, so a killed write never shows up as a bad name
            tmp, f = self._tmp_file(self.manifests)
            try:
                with f:
                    f.write(raw)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return sha256_digest(raw)

    def get_manifest(self, ref: ModelRef | str) -> tuple[bytes, dict]:
        r = as_ref(ref)
        path = self.manifest_path(r)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"model {r.short} not found in {self.home}") from None
        try:
            return raw, json.loads(raw)
        except ValueError as err:
            raise StoreError(f"manifest is not JSON: {err}", path=str(path)) from None

    def manifest_digest(self, ref: ModelRef | str) -> str:
        return sha256_digest(self.get_manifest(ref)[0])

    def _manifest_files(self) -> Iterator[tuple[ModelRef, Path]]:
        if not self.manifests.is_dir():
            return
        for path in sorted(self.manifests.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            host, namespace, model, tag = path.relative_to(self.manifests).parts
            try:
                ref = parse_ref(f"{host}/{namespace}/{model}:{tag}")
            except Exception:
                continue  # not ours to interpret (e.g. Ollama's 5-part names)
            yield ref, path

    def list(self) -> list[StoreEntry]:
        from modelpack.bundle import manifest_size

        entries = []
        for ref, path in self._manifest_files():
            try:
                raw = path.read_bytes()
                size = manifest_size(json.loads(raw))
            except (OSError, ValueError):
                continue
            entries.append(StoreEntry(ref, sha256_digest(raw), size, path.stat().st_mtime))
        return entries

    def remove(self, ref: ModelRef | str, *, prune: bool = True) -> list[str]:
        """Untag `ref`; with prune, delete blobs nothing references any more. Returns them."""
        r = as_ref(ref)
        path = self.manifest_path(r)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFoundError(f"model {r.short} not found in {self.home}") from None
        for parent in list(path.parents)[: 3]:  # model, namespace, host dirs if now empty
            with contextlib.suppress(OSError):
                parent.rmdir()
        return self.gc() if prune else []

    def copy(self, src: ModelRef | str, dst: ModelRef | str) -> str:
        raw, _ = self.get_manifest(src)
        return self.put_manifest(dst, raw)

    def referenced_blobs(self) -> set[str]:
        """Every blob a tag references, ours or (sharing this folder) Ollama's own, including
        the manifest blobs newer Ollama keeps under manifests-v2/ and links to."""
        from modelpack.bundle import manifest_blobs

        refs: set[str] = set()
        paths = [p for _, p in self._manifest_files()]
        v2 = self.home / "manifests-v2"
        if v2.is_dir():
            paths += [p for p in v2.glob("*/*/*/*") if p.is_file()]
        for path in paths:
            with contextlib.suppress(OSError, ValueError):
                raw = path.read_bytes()
                refs.add(sha256_digest(raw))
                refs.update(manifest_blobs(json.loads(raw)))
        return refs

    def gc(self) -> list[str]:
        """Delete unreferenced blobs and stale temp files; returns the deleted blob digests.

        Skipped (returns []) while any writer holds the store lock, so a build's not yet
        tagged blobs survive.
        """
        if not self.blobs.is_dir():
            return []
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            keep = {digest_hex(d) for d in self.referenced_blobs() if DIGEST_RE.match(d)}
            removed = []
            for path in self.blobs.iterdir():
                if path.name.startswith(TMP_PREFIX):
                    with contextlib.suppress(OSError):
                        path.unlink()  # no writer holds the lock, so no one owns it
                    continue
                m = DIGEST_RE.match(path.name)
                if m and m.group(1) not in keep:
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(f"sha256:{m.group(1)}")
            self._remove_manifest_temps()
            return sorted(removed)
        finally:
            os.close(fd)

    def _remove_manifest_temps(self) -> None:
        # called under the exclusive lock: no writer owns these
        if not self.manifests.is_dir():
            return
        for path in self.manifests.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                path.unlink()
