"""`modelpack build` on real conversions of the golden s1 checkpoint (openchat-3.5-0106 shaped)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf
import pytest

from modelpack import bundle
from modelpack.build import build
from modelpack.catalog import get_entry
from modelpack.cli import main
from modelpack.errors import InputError, OutputExistsError, SourceError, TemplateError
from modelpack.export import export_gguf
from modelpack.licenses import get_license
from modelpack.store import Store

MODEL = "openchat-3.5-0106"


@pytest.fixture(scope="module")
def built(golden_checkpoint, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    result = build(MODEL, from_dir=str(golden_checkpoint("s1")), home=str(home))
    return home, result


def _layer_text(store: Store, manifest: dict, media_type: str) -> list[str]:
    return [store.read_blob(d.digest).decode() for d in bundle.manifest_layers(manifest) if d.media_type == media_type]


def test_catalogue_build(built):
    home, result = built
    store = Store(home)
    entry = get_entry(MODEL)
    assert result.ref.short == f"{MODEL}:bf16" and result.verified is True
    path = home / "manifests" / "registry.ollama.ai" / "library" / MODEL / "bf16"
    raw = path.read_bytes()
    assert raw == result.manifest and "sha256:" + hashlib.sha256(raw).hexdigest() == result.digest
    manifest = json.loads(raw)
    assert [d.media_type for d in bundle.manifest_layers(manifest)] == [
        bundle.OLLAMA_MODEL, bundle.OLLAMA_TEMPLATE, bundle.OLLAMA_LICENSE, bundle.OLLAMA_PARAMS]
    assert _layer_text(store, manifest, bundle.OLLAMA_TEMPLATE) == [entry.go_template]
    assert _layer_text(store, manifest, bundle.OLLAMA_LICENSE) == [get_license(entry.license).text]
    assert _layer_text(store, manifest, bundle.OLLAMA_PARAMS) == ['{"stop":["\\u003c|end_of_turn|\\u003e"]}\n']
    config = json.loads(store.read_blob(manifest["config"]["digest"]))
    assert config["model_format"] == "gguf" and config["model_family"] == "llama"
    assert config["file_type"] == "BF16" and config["model_type"].endswith("M")
    assert config["rootfs"]["diff_ids"] == [d["digest"] for d in manifest["layers"]]
    # every blob is named by its content
    for blob in (home / "blobs").iterdir():
        assert blob.name == "sha256-" + hashlib.sha256(blob.read_bytes()).hexdigest()
    # the GGUF carries the Jinja template and the license
    reader = gguf.GGUFReader(store.blob_path(manifest["layers"][0]["digest"]))
    assert reader.fields["tokenizer.chat_template"].contents() == entry.jinja_template
    assert reader.fields["general.license"].contents() == get_license(entry.license).spdx


def test_same_inputs_same_digest(built, golden_checkpoint, tmp_path):
    _, first = built
    again = build(MODEL, from_dir=str(golden_checkpoint("s1")), home=str(tmp_path))
    assert again.digest == first.digest and again.manifest == first.manifest


def test_folder_modelfile_matches_catalogue(built, golden_checkpoint, tmp_path):
    """A Modelfile FROM the checkpoint folder picks up the catalogue entry its template matches."""
    _, first = built
    (tmp_path / "s1").symlink_to(golden_checkpoint("s1"))  # general.name comes from the folder name
    (tmp_path / "Modelfile").write_text("FROM ./s1\nPARAMETER temperature 0.6\n")
    result = build(str(tmp_path / "Modelfile"), tag="folder", home=str(tmp_path / "home"))
    assert result.ref.short == "folder:latest"  # a name without :TAG gets latest, as in Ollama
    assert result.layers[0] == first.layers[0]  # the same GGUF bytes
    store = Store(tmp_path / "home")
    params = json.loads(store.read_blob(result.layers[-1].digest))
    assert params == {"stop": ["<|end_of_turn|>"], "temperature": 0.6}


def test_modelfile_from_bundle_inherits_layers(built, tmp_path):
    home, first = built
    mf = tmp_path / "Modelfile"
    mf.write_text(f'FROM {MODEL}:bf16\nSYSTEM """Be brief."""\nPARAMETER temperature 0.25\nLICENSE extra terms\n'
                  "MESSAGE user Hi\nMESSAGE assistant Hello\n")
    result = build(str(mf), tag="me/brief:v1", home=str(home))
    store = Store(home)
    manifest = json.loads(result.manifest)
    assert [d.media_type for d in result.layers] == [
        bundle.OLLAMA_MODEL, bundle.OLLAMA_TEMPLATE, bundle.OLLAMA_LICENSE, bundle.OLLAMA_SYSTEM,
        bundle.OLLAMA_LICENSE, bundle.OLLAMA_PARAMS, bundle.OLLAMA_MESSAGES]
    assert result.layers[:3] == first.layers[:3]  # model, template and license are reused, not rewritten
    assert _layer_text(store, manifest, bundle.OLLAMA_PARAMS) == [
        '{"stop":["\\u003c|end_of_turn|\\u003e"],"temperature":0.25}\n']
    assert _layer_text(store, manifest, bundle.OLLAMA_MESSAGES) == [
        '[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]\n']
    assert (home / "manifests" / "registry.ollama.ai" / "me" / "brief" / "v1").is_file()


def test_build_from_gguf_file(built, tmp_path):
    home, first = built
    gguf_path = export_gguf(first.ref, tmp_path / "tiny-openchat.gguf", home=str(home)).path
    result = build(str(gguf_path), home=str(tmp_path / "home2"))
    assert result.ref.short == "tiny-openchat:bf16"
    assert result.layers[0] == first.layers[0]
    # the GGUF's chat template matches the catalogue entry, so its Go template and stop come along
    assert [d.media_type for d in result.layers] == [d.media_type for d in first.layers]
    with pytest.raises(InputError, match="--quant"):
        build(str(gguf_path), quant="Q4_K_M", home=str(tmp_path / "home2"))


def test_verification_refuses_a_wrong_template(built, tmp_path):
    home, _ = built
    mf = tmp_path / "Modelfile"
    template = "{{ range .Messages }}USER: {{ .Content }}{{ end }}ASSISTANT:"
    mf.write_text(f'FROM {MODEL}:bf16\nTEMPLATE """{template}"""\n')
    with pytest.raises(TemplateError, match="verification failed"):
        build(str(mf), tag="wrong", home=str(home))
    assert not Store(home).has_manifest("wrong")
    result = build(str(mf), tag="wrong", home=str(home), verify=False)
    assert result.verified is None and Store(home).has_manifest("wrong")


def test_modelpack_format(built):
    home, first = built
    result = build(f"{MODEL}:bf16", format="modelpack", tag="mp", home=str(home))
    doc = json.loads(result.manifest)
    assert doc["mediaType"] == bundle.OCI_MANIFEST and doc["artifactType"] == bundle.MODELPACK_ARTIFACT
    assert doc["config"]["mediaType"] == bundle.MODELPACK_CONFIG
    paths = {d.annotations[bundle.MODELPACK_FILEPATH]: d for d in result.layers}
    assert paths["model.gguf"].digest == first.layers[0].digest
    assert paths["model.gguf"].media_type == bundle.MODELPACK_WEIGHT
    assert paths["chat_template.jinja"].media_type == bundle.MODELPACK_WEIGHT_CONFIG
    assert paths["LICENSE"].media_type == bundle.MODELPACK_DOC
    config = json.loads(Store(home).read_blob(doc["config"]["digest"]))
    assert config["descriptor"]["licenses"] == ["Apache-2.0"]
    assert config["modelfs"]["diffIds"] == [d.digest for d in result.layers]
    assert build(f"{MODEL}:bf16", format="modelpack", tag="mp", home=str(home)).digest == result.digest


def test_existing_tag_needs_force(built, tmp_path):
    home, _ = built
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {MODEL}:bf16\nPARAMETER top_k 7\n")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        build(str(mf), tag=f"{MODEL}:bf16", home=str(home))
    assert "--force" in info.value.hint
    mf.write_text(f"FROM {MODEL}:bf16\n")  # identical result: re-tagging is fine
    assert build(str(mf), tag=f"{MODEL}:bf16", home=str(home)).digest == built[1].digest


def test_source_errors(tmp_path):
    with pytest.raises(SourceError):
        build("no-such-model-anywhere", home=str(tmp_path))
    mf = tmp_path / "Modelfile"
    mf.write_text("# missing base\nFROM ./nowhere\n")
    code = main(["build", str(mf), "-q"])
    assert code == 2


def _wait_for_partial(home: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        partials = list((home / "blobs").glob(".tmp-*")) if (home / "blobs").is_dir() else []
        if any(p.stat().st_size > 1_000_000 for p in partials):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    pytest.fail("the build never started writing its GGUF")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_build_leaves_nothing(golden_checkpoint, tmp_path, sig):
    home = tmp_path / "home"
    env = dict(os.environ, MODELPACK_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "modelpack", "build", MODEL, "--from",
                             str(golden_checkpoint("s1")), "-q"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            # a shell's background jobs inherit SIGINT ignored; a user's Ctrl-C does not
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_partial(home, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    assert not list((home / "manifests").rglob("*")) if (home / "manifests").exists() else True
    for blob in (home / "blobs").glob("sha256-*"):  # whatever is visible is complete
        assert blob.name == "sha256-" + hashlib.sha256(blob.read_bytes()).hexdigest()
    if sig == signal.SIGINT:
        assert not list((home / "blobs").glob(".tmp-*"))  # cleaned up on the way out
    store = Store(home)
    assert store.list() == []
    result = build(MODEL, from_dir=str(golden_checkpoint("s1")), home=str(home))
    assert store.has_manifest(result.ref)
    store.gc()
    assert not list((home / "blobs").glob(".tmp-*"))
    assert {p.name for p in (home / "blobs").iterdir()} == {
        "sha256-" + d[7:] for d in bundle.manifest_blobs(json.loads(result.manifest))}


# ---- Modelfiles no one here wrote (QA) ----------------------------------------------------------------
@pytest.mark.parametrize("body, line, fragment", [
    ("FROM ./broken.gguf\n", 1, "not a readable GGUF file"),  # GGUF magic, then nothing
    ("# base\nFROM ./empty\n", 2, "config.json"),  # a folder without a checkpoint
    ("FROM ./broken.gguf\nTEMPLATE \"\"\n", 2, "TEMPLATE is empty"),
    ("FROM ./broken.gguf\nparameter Temperature warm\n", 2, "invalid float"),
])
def test_modelfile_source_errors_name_the_line(tmp_path, body, line, fragment):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (tmp_path / "empty").mkdir()
    mf = tmp_path / "Modelfile"
    mf.write_text(body)
    with pytest.raises(InputError, match=fragment) as info:
        build(str(mf), home=str(tmp_path / "home"))
    assert str(info.value).startswith(f"{mf}:{line}: ")
    blobs = tmp_path / "home" / "blobs"
    assert not blobs.is_dir() or not any(blobs.iterdir())  # nothing was imported


@pytest.mark.parametrize("template, fragment", [
    ('{{ range .Messages }}{{ .Content }}', "Modelfile:3: Go template does not parse: unexpected EOF"),
    ('{{ range .Messages }}{{ if eq .Role "user" }}GPT4 Correct User:{{ .Content }}<|end_of_turn|>{{ end }}'
     '{{ end }}GPT4 Correct Assistant:', "a space is missing before 'Hello'"),
])
def test_build_names_why_verification_failed(built, tmp_path, template, fragment):
    home, _ = built
    mf = tmp_path / "Modelfile"
    mf.write_text(f'FROM {MODEL}:bf16\n\nTEMPLATE """{template}"""\n')
    with pytest.raises(TemplateError, match="verification failed") as info:
        build(str(mf), tag="qa-wrong", home=str(home))
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert not Store(home).has_manifest("qa-wrong")


def test_show_modelfile_keeps_requires_renderer_parser(built, tmp_path, monkeypatch, capsys):
    home, _ = built
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {MODEL}:bf16\nREQUIRES 0.9.0\nRENDERER qwen3\nPARSER qwen3\n")
    first = build(str(mf), tag="qa-req", home=str(home), verify=False)
    assert main(["show", "qa-req", "--modelfile"]) == 0
    shown = capsys.readouterr().out
    assert {"REQUIRES 0.9.0", "RENDERER qwen3", "PARSER qwen3"} <= set(shown.splitlines())
    (tmp_path / "Modelfile.shown").write_text(shown)
    assert build(str(tmp_path / "Modelfile.shown"), tag="qa-req2", home=str(home), verify=False).digest == first.digest


def test_folder_with_a_broken_chat_template_is_refused(tmp_path):
    """No catalogue entry has this template, so the bundle has no Go template; the Jinja template is still
    checked against the references of the entry whose vocabulary fits (openchat-3.5-0106) and refused."""
    from conftest import MISTRAL_SPM, make_checkpoint

    broken = get_entry(MODEL).jinja_template.replace("': '", "':'")
    folder = make_checkpoint(tmp_path / "ckpt", "--tokenizer", str(MISTRAL_SPM), "--hidden", "64", "--layers", "1",
                             "--heads", "2", "--kv-heads", "1", "--ffn", "64", "--chat-template", broken)
    home = tmp_path / "home"
    with pytest.raises(TemplateError, match="a space is missing before 'Hello'"):
        build(str(folder), tag="broken", home=str(home))
    assert not Store(home).has_manifest("broken")
    assert build(str(folder), tag="broken", home=str(home), verify=False).verified is None
    # --from a checkpoint of another model: the tokenizer is named as the cause
    with pytest.raises(TemplateError, match="tokenizer is not openchat_v3.2_super's"):
        build("openchat_v3.2_super", from_dir=str(folder), home=str(home))


def test_bad_tag_fails_before_converting(golden_checkpoint, tmp_path):
    from modelpack.errors import InvalidNameError

    for kw in ({"tag": "Bad Name"}, {"modelfile": str(tmp_path / "Modelfile")}):
        (tmp_path / "Modelfile").write_text(f"FROM {golden_checkpoint('s1')}\n")
        source = "Bad Name" if "modelfile" in kw else str(golden_checkpoint("s1"))
        start = time.time()
        with pytest.raises(InvalidNameError):
            build(source, home=str(tmp_path / "home"), **kw)
        assert time.time() - start < 2 and not (tmp_path / "home" / "blobs").exists()
