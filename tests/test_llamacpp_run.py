"""`modelpack run`: a stored bundle completes a prompt in llama.cpp with its template, system and stop."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from conftest import MISTRAL_SPM, make_checkpoint

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llama

from modelpack.bundle import (OLLAMA_CONFIG, OLLAMA_MANIFEST, OLLAMA_MODEL, OLLAMA_PARAMS,  # noqa: E402
                              OLLAMA_SYSTEM, OLLAMA_TEMPLATE)
from modelpack.cli import main  # noqa: E402
from modelpack.llamacpp import load_model, tokenize  # noqa: E402
from modelpack.store import Store  # noqa: E402

GO_TEMPLATE = ("{{ if .System }}GPT4 Correct System: {{ .System }}<|end_of_turn|>{{ end }}"
               "GPT4 Correct User: {{ .Prompt }}<|end_of_turn|>GPT4 Correct Assistant:")
SYSTEM = "You are terse."


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from modelpack.convert import convert

    root = tmp_path_factory.mktemp("run")
    ckpt = make_checkpoint(root / "ckpt", "--arch", "llama", "--hidden", "64", "--layers", "1", "--heads", "2",
                           "--kv-heads", "1", "--ffn", "128", "--shards", "1", "--seed", "5",
                           "--tokenizer", str(MISTRAL_SPM))
    out = root / "tiny.gguf"
    convert(ckpt, out, outtype="f16")
    return out


def _store_bundle(home, gguf, params: dict, name: str) -> None:
    """An Ollama-format bundle written through the store API (independent of `build`)."""
    store = Store(home)
    layers = []
    digest, size = store.import_file(gguf)
    layers.append({"mediaType": OLLAMA_MODEL, "digest": digest, "size": size})
    for media, data in ((OLLAMA_TEMPLATE, GO_TEMPLATE.encode()), (OLLAMA_SYSTEM, SYSTEM.encode()),
                        (OLLAMA_PARAMS, json.dumps(params).encode())):
        digest, size = store.write_blob(data)
        layers.append({"mediaType": media, "digest": digest, "size": size})
    cfg_digest, cfg_size = store.write_blob(b'{"model_format":"gguf"}')
    manifest = {"schemaVersion": 2, "mediaType": OLLAMA_MANIFEST,
                "config": {"mediaType": OLLAMA_CONFIG, "digest": cfg_digest, "size": cfg_size},
                "layers": layers}
    store.put_manifest(name, json.dumps(manifest).encode())


def _run_cli(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", *args, "--json"])
    assert code == 0
    return json.loads(out.getvalue())


def _greedy(gguf, text: str, n: int, add_bos: bool) -> tuple[list[int], list[int]]:
    """Greedy continuation taken token by token from llama.cpp's logits (no sampler involved)."""
    model = load_model(gguf, n_ctx=128, n_threads=2, logits_all=True)
    prompt = tokenize(model, text, add_bos=add_bos)
    model.eval(prompt)
    completion: list[int] = []
    for _ in range(n):
        nxt = int(np.argmax(model.scores[model.n_tokens - 1]))
        if nxt == model.token_eos():
            break
        completion.append(nxt)
        model.eval([nxt])
    return prompt, completion


def test_run_renders_template_and_completes_greedily(tiny_gguf, modelpack_home):
    _store_bundle(modelpack_home, tiny_gguf, {"temperature": 0.7, "repeat_penalty": 1.0, "stop": ["<|end_of_turn|>"]}, "tiny:f16")
    result = _run_cli("tiny:f16", "Hello there", "--max-tokens", "6", "--temperature", "0")
    assert result["template"] in ("go", "jinja")
    assert result["prompt"].endswith("GPT4 Correct User: Hello there<|end_of_turn|>GPT4 Correct Assistant:")
    assert SYSTEM in result["prompt"]
    # A Jinja template writes BOS itself; llama.cpp adds it in front of a Go-rendered prompt.
    prompt, completion = _greedy(tiny_gguf, result["prompt"], 6, add_bos=result["template"] == "go")
    assert result["prompt_tokens"] == len(prompt) and prompt[0] == 1 and prompt[1] != 1
    model = load_model(tiny_gguf, vocab_only=True)
    expected = model.detokenize(completion, prev_tokens=prompt).decode("utf-8", "ignore")
    assert result["completion"] == expected
    assert result["completion_tokens"] == len(completion) and result["finish_reason"] == "length"


def test_run_stops_at_the_bundles_stop_string(tiny_gguf, modelpack_home):
    _store_bundle(modelpack_home, tiny_gguf, {"temperature": 0, "repeat_penalty": 1.0}, "tiny:nostop")
    full = _run_cli("tiny:nostop", "Hello there", "--max-tokens", "8")["completion"]
    words = full.split()
    assert len(words) >= 2, full
    stop = words[1]
    _store_bundle(modelpack_home, tiny_gguf, {"temperature": 0, "repeat_penalty": 1.0, "stop": [stop]}, "tiny:stop")
    result = _run_cli("tiny:stop", "Hello there", "--max-tokens", "8")
    assert result["completion"] == full[: full.index(stop)]
    assert result["finish_reason"] == "stop"


def test_run_unknown_model_is_one_line_error(modelpack_home, capsys):
    assert main(["run", "nosuch:model", "hi"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nosuch" in err


@pytest.mark.parametrize("fmt", ["ollama", "modelpack"])
def test_run_a_bundle_made_by_build(tmp_path, modelpack_home, fmt):
    """The user's path: `modelpack build FOLDER` then `modelpack run` (template and stop from build),
    in either bundle format."""
    ckpt = make_checkpoint(tmp_path / "ckpt", "--arch", "mistral", "--hidden", "64", "--layers", "1",
                           "--heads", "2", "--kv-heads", "1", "--ffn", "128", "--shards", "1", "--seed", "6",
                           "--tokenizer", str(MISTRAL_SPM))
    assert main(["build", str(ckpt), "--quant", "Q8_0", "--tag", "tiny-built:q8_0", "--format", fmt, "--quiet"]) == 0
    result = _run_cli("tiny-built:q8_0", "How are you today?", "--max-tokens", "5", "--temperature", "0")
    assert result["prompt"].endswith("GPT4 Correct User: How are you today?<|end_of_turn|>GPT4 Correct Assistant:")
    assert 0 < result["completion_tokens"] <= 5 and "<|end_of_turn|>" not in result["completion"]
