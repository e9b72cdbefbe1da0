"""The local store: Ollama's layout, atomic blob writes, manifests, gc, concurrency with builds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from modelpack import bundle
from modelpack.errors import DigestMismatchError, NotFoundError, StoreError
from modelpack.names import parse_ref
from modelpack.store import Store


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tag(store: Store, ref: str, payload: bytes) -> tuple[str, bytes]:
    """Store a one-layer Ollama manifest for `ref`; returns (layer digest, manifest bytes)."""
    digest, size = store.write_blob(payload)
    cfg_digest, cfg_size = store.write_blob(bundle.OllamaConfig(diff_ids=[digest]).encode())
    raw = bundle.ollama_manifest(
        bundle.Descriptor(bundle.OLLAMA_CONFIG, cfg_digest, cfg_size),
        [bundle.Descriptor(bundle.OLLAMA_MODEL, digest, size)],
    )
    store.put_manifest(ref, raw)
    return digest, raw


def test_home_from_environment(modelpack_home):
    assert Store().home == modelpack_home


def test_blob_writer_hashes_while_writing(tmp_path):
    store = Store(tmp_path)
    chunks = [b"GGUF", os.urandom(100_000), b"tail"]
    with store.blob_writer() as w:
        for c in chunks:
            w.write(c)
        assert w.tell() == sum(map(len, chunks))
        # nothing visible under its final name while it is being written
        assert not any(p.name.startswith("sha256-") for p in (tmp_path / "blobs").iterdir())
    data = b"".join(chunks)
    assert w.digest == _sha(data) and w.size == len(data)
    assert store.blob_path(w.digest) == tmp_path / "blobs" / f"sha256-{w.digest[7:]}"
    assert store.blob_path(w.digest).read_bytes() == data
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [f"sha256-{w.digest[7:]}"]


def test_blob_writer_expected_digest_mismatch_stores_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(DigestMismatchError) as info:
        with store.blob_writer(expected_digest=_sha(b"other")) as w:
            w.write(b"payload")
    assert info.value.digest == _sha(b"other")
    assert list((tmp_path / "blobs").iterdir()) == []
    assert not store.has_blob(_sha(b"payload"))


def test_blob_writer_error_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.blob_writer() as w:
            w.write(b"half")
            raise RuntimeError("converter failed")
    assert list((tmp_path / "blobs").iterdir()) == []


def test_write_blob_dedupes(tmp_path):
    store = Store(tmp_path)
    a = store.write_blob(b"same")
    b = store.write_blob(b"same")
    assert a == b == (_sha(b"same"), 4)
    assert store.read_blob(a[0]) == b"same"
    store.verify_blob(a[0])


def test_verify_blob_detects_corruption(tmp_path):
    store = Store(tmp_path)
    digest, _ = store.write_blob(b"original")
    store.blob_path(digest).write_bytes(b"tampered")
    with pytest.raises(DigestMismatchError):
        store.verify_blob(digest)


def test_bad_digest_rejected(tmp_path):
    with pytest.raises(StoreError):
        Store(tmp_path).blob_path("sha256:../../etc/passwd")


def test_manifest_roundtrip_in_ollama_layout(tmp_path):
    store = Store(tmp_path)
    layer, raw = _tag(store, "Tiny:Q4_K_M", b"weights")
    path = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "q4_k_m"
    assert path.read_bytes() == raw
    got_raw, doc = store.get_manifest("tiny:q4_k_m")
    assert got_raw == raw and doc["layers"][0]["digest"] == layer
    assert bundle.manifest_layers(doc)[0].media_type == bundle.OLLAMA_MODEL
    assert store.manifest_digest("tiny:q4_k_m") == _sha(raw)


def test_put_manifest_requires_blobs(tmp_path):
    store = Store(tmp_path)
    raw = bundle.ollama_manifest(bundle.Descriptor(bundle.OLLAMA_CONFIG, _sha(b"c"), 1),
                                 [bundle.Descriptor(bundle.OLLAMA_MODEL, _sha(b"m"), 1)])
    with pytest.raises(NotFoundError):
        store.put_manifest("x", raw)
    assert not store.has_manifest("x")


def test_get_missing_manifest(tmp_path):
    with pytest.raises(NotFoundError, match="nope:latest"):
        Store(tmp_path).get_manifest("nope")


def test_list_copy_remove_and_gc(tmp_path):
    store = Store(tmp_path)
    a_layer, a_raw = _tag(store, "a", b"A" * 10)
    b_layer, _ = _tag(store, "ns/b:v1", b"B" * 20)
    store.copy("a", "a:copy")
    entries = {str(e.ref): e for e in store.list()}
    assert set(entries) == {"registry.ollama.ai/library/a:latest", "registry.ollama.ai/library/a:copy",
                            "registry.ollama.ai/ns/b:v1"}
    a = entries["registry.ollama.ai/library/a:latest"]
    assert a.digest == _sha(a_raw)
    assert a.size == sum(d.size for d in bundle.manifest_layers(json.loads(a_raw))) + json.loads(a_raw)["config"]["size"]
    assert a.modified <= time.time()

    # a:copy still references A's blobs, so removing a keeps them
    assert store.remove("a") == []
    assert store.has_blob(a_layer)
    removed = store.remove("a:copy")
    assert a_layer in removed and not store.has_blob(a_layer)
    assert store.has_blob(b_layer)
    assert not (tmp_path / "manifests" / "registry.ollama.ai" / "library" / "a").exists()
    with pytest.raises(NotFoundError):
        store.remove("a")


def test_gc_removes_stale_temp_files_and_orphans(tmp_path):
    store = Store(tmp_path)
    orphan, _ = store.write_blob(b"orphan")
    stale = tmp_path / "blobs" / ".tmp-999999-deadbeef.partial"
    stale.write_bytes(b"half a blob from a killed build")
    assert orphan in store.gc()
    assert not stale.exists() and not store.has_blob(orphan)


def test_gc_spares_blobs_while_a_writer_holds_the_store(tmp_path):
    store = Store(tmp_path)
    with store.writing():
        digest, _ = store.write_blob(b"written by a build, not yet tagged")
        # another process runs `modelpack rm` meanwhile
        code = ("import sys; from modelpack.store import Store; "
                "print(len(Store(sys.argv[1]).gc()))")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "0"
        assert store.has_blob(digest)
    assert store.gc() == [digest]


def test_names_with_host_and_port(tmp_path):
    store = Store(tmp_path)
    _tag(store, "localhost:5000/team/model:v2", b"x")
    assert (tmp_path / "manifests" / "localhost:5000" / "team" / "model" / "v2").is_file()
    assert [str(e.ref) for e in store.list()] == ["localhost:5000/team/model:v2"]
    assert store.list()[0].ref == parse_ref("localhost:5000/team/model:v2")


def test_gc_keeps_what_newer_ollama_references(tmp_path):
    """Sharing the folder with Ollama (OLLAMA_MODELS): its manifests-v2 links keep their blobs."""
    store = Store(tmp_path)
    layer, raw = _tag(store, "theirs", b"ollama's model")
    manifest_blob, _ = store.write_blob(raw)
    link = tmp_path / "manifests-v2" / "registry.ollama.ai" / "library" / "theirs" / "latest"
    link.parent.mkdir(parents=True)
    link.symlink_to(store.blob_path(manifest_blob))
    (tmp_path / "manifests" / "registry.ollama.ai" / "library" / "theirs" / "latest").unlink()
    assert store.gc() == []
    assert store.has_blob(layer) and store.has_blob(manifest_blob)
