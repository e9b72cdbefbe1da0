"""Bundle JSON is byte-for-byte what Go's encoding/json (Ollama's encoder) writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelpack import bundle
from modelpack.bundle import Descriptor, Float32, GoStruct, go_encode, go_json

# Written by tests/data/bundle/go_json_vectors.go with Go's encoding/json (go 1.19).
VECTORS = json.loads((Path(__file__).parent / "data" / "bundle" / "go_json_vectors.json").read_text())


@pytest.mark.parametrize("text", sorted(VECTORS["f32"]))
def test_float32_like_go(text):
    assert go_json(Float32(float(text))) == VECTORS["f32"][text]


@pytest.mark.parametrize("text", sorted(VECTORS["f64"]))
def test_float64_like_go(text):
    assert go_json(float(text)) == VECTORS["f64"][text]


@pytest.mark.parametrize("text", sorted(VECTORS["str"]))
def test_strings_like_go(text):
    assert go_json(text) == VECTORS["str"][text]


def test_go_1_22_short_escapes():
    # Go >= 1.22 (what Ollama is built with) writes \b and \f in their short forms
    assert go_json("\b\f") == '"\\b\\f"'


def test_maps_sorted_structs_ordered_and_newline():
    assert go_encode({"b": 1, "a": [True, None]}) == b'{"a":[true,null],"b":1}\n'
    assert go_json(GoStruct(("z", 1), ("a", bundle.OMIT), ("m", "x"))) == '{"z":1,"m":"x"}'
    with pytest.raises(ValueError):
        go_json(float("nan"))


def _d(data: bytes, media_type: str) -> Descriptor:
    return Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def test_ollama_manifest_layout():
    cfg = _d(b"{}", bundle.OLLAMA_CONFIG)
    model = _d(b"GGUF...", bundle.OLLAMA_MODEL)
    params = _d(bundle.ollama_params({"stop": ["<|end|>"]}), bundle.OLLAMA_PARAMS)
    raw = bundle.ollama_manifest(cfg, [model, params])
    assert raw.endswith(b"}\n") and b" " not in raw
    doc = json.loads(raw)
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers"]
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == bundle.OLLAMA_MANIFEST
    assert list(doc["config"]) == ["mediaType", "digest", "size"]
    assert bundle.manifest_layers(doc) == [model, params]
    assert bundle.manifest_blobs(doc) == [cfg.digest, model.digest, params.digest]
    assert bundle.manifest_size(doc) == cfg.size + model.size + params.size
    assert not bundle.is_modelpack(doc)


def test_params_and_messages_layers():
    assert bundle.ollama_params({"temperature": Float32(0.7), "stop": ["<|im_end|>", "a&b"], "num_ctx": 2048}) == \
        b'{"num_ctx":2048,"stop":["\\u003c|im_end|\\u003e","a\\u0026b"],"temperature":0.7}\n'
    assert bundle.ollama_messages([("user", "hi <b>"), ("assistant", "yo")]) == \
        b'[{"role":"user","content":"hi \\u003cb\\u003e"},{"role":"assistant","content":"yo"}]\n'


def test_ollama_config_fields():
    cfg = json.loads(bundle.OllamaConfig(model_family="llama", model_families=["llama"], model_type="7.2B",
                                         file_type="Q4_K_M", diff_ids=["sha256:" + "0" * 64]).encode())
    assert list(cfg) == ["model_format", "model_family", "model_families", "model_type", "file_type",
                         "architecture", "os", "rootfs"]
    assert cfg["model_format"] == "gguf" and cfg["os"] == "linux" and cfg["architecture"] == "amd64"
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}
    with_requires = json.loads(bundle.OllamaConfig(requires="0.5.1").encode())
    assert with_requires["requires"] == "0.5.1"


def test_modelpack_manifest_and_config():
    cfg_bytes = bundle.ModelPackConfig(name="m", family="llama", licenses=["Apache-2.0"], param_size="7.2B",
                                       quantization="Q4_K_M", diff_ids=["sha256:" + "1" * 64]).encode()
    cfg = json.loads(cfg_bytes)
    assert cfg["descriptor"] == {"family": "llama", "name": "m", "licenses": ["Apache-2.0"]}
    assert "createdAt" not in cfg["descriptor"]  # a timestamp would change every build's digest
    assert cfg["modelfs"] == {"type": "layers", "diffIds": ["sha256:" + "1" * 64]}
    assert cfg["config"]["format"] == "gguf" and cfg["config"]["quantization"] == "Q4_K_M"
    weight = Descriptor(bundle.MODELPACK_WEIGHT, "sha256:" + "1" * 64, 10, {bundle.MODELPACK_FILEPATH: "model.gguf"})
    doc = json.loads(bundle.modelpack_manifest(_d(cfg_bytes, bundle.MODELPACK_CONFIG), [weight]))
    assert doc["mediaType"] == bundle.OCI_MANIFEST and doc["artifactType"] == bundle.MODELPACK_ARTIFACT
    assert doc["layers"][0]["annotations"] == {"org.cncf.model.filepath": "model.gguf"}
    assert bundle.is_modelpack(doc) and bundle.manifest_layers(doc) == [weight]
