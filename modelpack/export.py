"""`modelpack export`: a bundle out of the store, as an OCI image layout or as a plain GGUF.

The OCI image layout (image-spec image-layout.md) holds the manifest, config and layers unchanged
under blobs/sha256/<hex>, with index.json naming the manifest by `org.opencontainers.image.ref.name`,
so the exported digest is the store's digest and any OCI tool (skopeo, oras, crane) can copy it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from modelpack import bundle
from modelpack.errors import InputError, NotFoundError, OutputExistsError, StoreError
from modelpack.fsutil import atomic_write, write_bytes_atomic
from modelpack.names import ModelRef, parse_ref
from modelpack.progress import Progress, or_null
from modelpack.store import Store, digest_hex, sha256_digest

REF_NAME = "org.opencontainers.image.ref.name"
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
CHUNK = 1 << 20


@dataclass
class ExportResult:
    ref: ModelRef
    path: Path
    digest: str  # manifest digest (OCI) or GGUF blob digest
    size: int
    tag: str | None = None

    def to_dict(self) -> dict:
        return {"ref": str(self.ref), "path": str(self.path), "digest": self.digest, "size": self.size,
                "tag": self.tag}


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put a blob at dst: a hard link when the filesystem allows (blobs are immutable), else a copy."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def export_oci(ref: ModelRef | str, directory: str | os.PathLike, *, tag: str | None = None,
               home: str | None = None) -> ExportResult:
    """Write (or add to) an OCI image layout at `directory`; the manifest is tagged `tag`
    (default: the model's tag)."""
    store = Store(home)
    ref = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    raw, manifest = store.get_manifest(ref)
    tag = tag or ref.tag
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise OutputExistsError("export target exists and is not a folder", path=str(root))
    layout = root / "oci-layout"
    if root.is_dir() and any(root.iterdir()) and not layout.is_file():
        raise OutputExistsError("folder is not empty and is not an OCI image layout", path=str(root))
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for digest in bundle.manifest_blobs(manifest):
        _link_or_copy(store.blob_path(digest), blobs / digest_hex(digest))
    if manifest.get("mediaType") != bundle.OCI_MANIFEST:
        # OCI tools look up only OCI manifests in a layout's index: restate Ollama's Docker v2
        # manifest as an OCI image manifest with the same config and layers
        raw = oci_manifest_for(manifest)
        manifest = json.loads(raw)
    digest = sha256_digest(raw)
    write_bytes_atomic(blobs / digest_hex(digest), raw)
    if not layout.is_file():
        write_bytes_atomic(layout, json.dumps(OCI_LAYOUT).encode())
    index_path = root / "index.json"
    index = {"schemaVersion": 2, "mediaType": bundle.OCI_INDEX, "manifests": []}
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise StoreError(f"index.json is not JSON: {err}", path=str(index_path)) from None
    entries = [m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != tag]
    entries.append({"mediaType": bundle.OCI_MANIFEST, "digest": digest,
                    "size": len(raw), "annotations": {REF_NAME: tag}})
    index["manifests"] = entries
    write_bytes_atomic(index_path, (json.dumps(index, indent=2) + "\n").encode())
    return ExportResult(ref, root, digest, len(raw) + bundle.manifest_size(manifest), tag)


def oci_manifest_for(manifest: dict) -> bytes:
    """The OCI image manifest with the same config and layers as an Ollama manifest."""
    cfg = bundle.manifest_config(manifest)
    if cfg.media_type == bundle.OLLAMA_CONFIG:  # Docker's image config type -> its OCI equivalent, as
        cfg = bundle.Descriptor(bundle.OCI_IMAGE_CONFIG, cfg.digest, cfg.size)  # skopeo converts it
    return bundle.go_encode(bundle.GoStruct(
        ("schemaVersion", 2),
        ("mediaType", bundle.OCI_MANIFEST),
        ("config", cfg.to_go()),
        ("layers", [d.to_go() for d in bundle.manifest_layers(manifest)]),
    ))


def model_layer(manifest: dict) -> bundle.Descriptor | None:
    for d in bundle.manifest_layers(manifest):
        if d.media_type in (bundle.OLLAMA_MODEL, bundle.MODELPACK_WEIGHT):
            return d
    return None


def export_gguf(ref: ModelRef | str, path: str | os.PathLike, *, force: bool = False, home: str | None = None,
                progress: Progress | None = None) -> ExportResult:
    """Copy the bundle's GGUF to `path` (checked against its digest while copying)."""
    import hashlib

    store = Store(home)
    ref = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    _, manifest = store.get_manifest(ref)
    layer = model_layer(manifest)
    if layer is None:
        raise NotFoundError(f"{ref.short} has no GGUF model layer")
    out = Path(path)
    if out.is_dir():
        out = out / f"{ref.model}-{ref.tag}.gguf"
    if out.exists() and not force:
        raise OutputExistsError("output exists (use --force to overwrite)", path=str(out))
    h = hashlib.sha256()
    with store.open_blob(layer.digest) as src, atomic_write(out) as dst, \
            or_null(progress).task(f"exporting {out.name}", layer.size) as task:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            dst.write(chunk)
            task.advance(len(chunk))
        if "sha256:" + h.hexdigest() != layer.digest:
            raise InputError("stored GGUF does not match its digest (store corrupted?)", digest=layer.digest,
                             path=str(store.blob_path(layer.digest)))
    return ExportResult(ref, out, layer.digest, layer.size)
