"""export (OCI image layout read by skopeo, plain GGUF) and the store commands of the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import gguf
import numpy as np
import pytest

from modelpack import bundle
from modelpack.build import build
from modelpack.cli import main
from modelpack.errors import OutputExistsError
from modelpack.export import export_gguf, export_oci
from modelpack.store import Store

skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")


@pytest.fixture
def tiny(tmp_path, modelpack_home):
    """A bundle built from a tiny hand-written GGUF (no conversion needed)."""
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    mf = tmp_path / "Modelfile"
    mf.write_text('FROM ./tiny.gguf\nTEMPLATE "{{ .Prompt }}"\nPARAMETER stop <end>\nLICENSE tiny license\n')
    result = build(str(mf), tag="tiny:f32", verify=False)
    return path, result


def test_tiny_bundle(tiny):
    path, result = tiny
    assert result.ref.short == "tiny:f32"
    assert result.layers[0].digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert [d.media_type for d in result.layers] == [bundle.OLLAMA_MODEL, bundle.OLLAMA_TEMPLATE,
                                                    bundle.OLLAMA_LICENSE, bundle.OLLAMA_PARAMS]


@skopeo
def test_oci_layout_read_by_skopeo(tiny, tmp_path):
    _, result = tiny
    out = tmp_path / "oci"
    exported = export_oci(result.ref, out)
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "f32"}
    for blob in (out / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:f32"], capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == exported.digest
    doc = json.loads(raw)
    assert doc["mediaType"] == bundle.OCI_MANIFEST
    assert [d["digest"] for d in doc["layers"]] == [d.digest for d in result.layers]
    # the same config and layers as the stored (Docker v2) manifest
    assert doc["config"]["digest"] == result.config.digest
    copy = tmp_path / "copy"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{out}:f32", f"dir:{copy}"], capture_output=True, check=True)
    for d in result.layers:
        assert (copy / d.digest[7:]).read_bytes() == Store().read_blob(d.digest)
    # a second tag goes into the same layout
    export_oci(result.ref, out, tag="second")
    names = {m["annotations"]["org.opencontainers.image.ref.name"] for m in
             json.loads((out / "index.json").read_text())["manifests"]}
    assert names == {"f32", "second"}


@skopeo
def test_modelpack_bundle_exports_unchanged(tiny, tmp_path):
    _, result = tiny
    mp = build(str(result.ref), format="modelpack", tag="tiny-mp:f32", verify=False)
    out = tmp_path / "oci"
    exported = export_oci(mp.ref, out)
    assert exported.digest == mp.digest  # already an OCI manifest: exported byte for byte
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:f32"], capture_output=True, check=True).stdout
    assert raw == mp.manifest


def test_export_gguf(tiny, tmp_path):
    path, result = tiny
    out = export_gguf(result.ref, tmp_path / "out.gguf")
    assert out.path.read_bytes() == path.read_bytes()
    with pytest.raises(OutputExistsError):
        export_gguf(result.ref, tmp_path / "out.gguf")
    export_gguf(result.ref, tmp_path / "out.gguf", force=True)


def test_cli_store_commands(tiny, tmp_path, capsys):
    _, result = tiny
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["digest"]) for m in listed] == [("tiny:f32", result.digest)]

    assert main(["show", "tiny:f32", "--template"]) == 0
    assert capsys.readouterr().out == "{{ .Prompt }}\n"
    assert main(["show", "tiny:f32", "--params"]) == 0
    assert capsys.readouterr().out.split() == ["stop", '"<end>"']
    assert main(["show", "tiny:f32", "--license"]) == 0
    assert capsys.readouterr().out == "tiny license\n"
    assert main(["show", "tiny:f32", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["digest"] == result.digest and shown["parameters"] == {"stop": ["<end>"]}

    # the Modelfile `show` prints rebuilds the same bundle
    assert main(["show", "tiny:f32", "--modelfile"]) == 0
    (tmp_path / "Modelfile.shown").write_text(capsys.readouterr().out)
    assert main(["build", "-f", str(tmp_path / "Modelfile.shown"), "--tag", "again", "--no-verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == result.digest

    assert main(["cp", "tiny:f32", "other/name:v1"]) == 0
    assert Store().manifest_digest("other/name:v1") == result.digest
    assert main(["rm", "tiny:f32", "again"]) == 0
    assert Store().has_blob(result.layers[0].digest)  # other/name:v1 still uses it
    assert main(["rm", "other/name:v1"]) == 0
    assert not Store().has_blob(result.layers[0].digest)
    assert main(["show", "tiny:f32"]) == 1
    assert "not found" in capsys.readouterr().err

    assert main(["export", "nothing-here", "--gguf", str(tmp_path / "x.gguf")]) == 1
