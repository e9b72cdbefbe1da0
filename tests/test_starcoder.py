"""GPTBigCodeForCausalLM -> llama.cpp's "starcoder" GGUF, compared with llama.cpp's own conversions."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import DATA, STARCODER_JSON, make_checkpoint
from gguf_digest import digest
from modelpack.checkpoint import open_checkpoint
from modelpack.convert import convert, supported
from modelpack.errors import CheckpointError

GOLDEN = DATA / "convert"


def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def assert_same_gguf(ours: dict, want: dict) -> None:
    assert ours["kv"] == want["kv"]
    assert list(ours["kv"]) == list(want["kv"])  # key order too
    assert ours["order"] == want["order"]
    bad = [name for name, t in want["tensors"].items() if ours["tensors"].get(name) != t]
    assert not bad, f"tensors differ: {bad}"


def test_registered():
    assert "GPTBigCodeForCausalLM" in supported()


# Float outtypes straight from convert_hf_to_gguf.py; two quant mixes (convert auto + llama-quantize)
# that exercise the starcoder specifics: token_embd standing in for the tied output, position_embd
# never quantized, the fused attn_qkv.
@pytest.mark.parametrize("kind", ["f32", "f16", "bf16", "q8_0", "Q4_K_M", "Q6_K"])
def test_g1_matches_llama_cpp(golden_checkpoint, tmp_path, kind):
    out = tmp_path / "g1.gguf"
    options = {"outtype": kind} if kind.islower() else {"quant": kind}
    result = convert(golden_checkpoint("g1"), out, **options)
    assert_same_gguf(digest(str(out)), golden(f"g1-{kind}"))
    assert result.summary.architecture == "starcoder"
    assert result.summary.vocab_size == 49153


def checkpoint_tensors(folder) -> dict[str, np.ndarray]:
    with open_checkpoint(folder) as ckpt:
        return {name: ckpt.tensor(name).copy() for name in ckpt.tensor_names()}


def test_other_shapes_keep_every_tensor_as_is(tmp_path):
    """3 layers, 8 heads, 2 shards: keys from config.json and every tensor unchanged (F32 out)."""
    folder = make_checkpoint(tmp_path / "ckpt", "--arch", "gpt_bigcode", "--tokenizer", str(STARCODER_JSON),
                             "--hidden", "128", "--layers", "3", "--heads", "8", "--seed", "11", "--shards", "2")
    out = tmp_path / "out.gguf"
    convert(folder, out, outtype="f32")
    reader = gguf.GGUFReader(out)
    kv = digest(str(out))["kv"]
    assert kv["general.architecture"] == "starcoder"
    assert (kv["starcoder.context_length"], kv["starcoder.embedding_length"], kv["starcoder.feed_forward_length"],
            kv["starcoder.block_count"], kv["starcoder.attention.head_count"],
            kv["starcoder.attention.head_count_kv"]) == (8192, 128, 512, 3, 8, 1)
    assert kv["tokenizer.ggml.pre"] == "starcoder"

    source = checkpoint_tensors(folder)
    renames = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
               "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
    per_layer = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                 "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i in range(3):
        for hf, gg in per_layer.items():
            for suffix in ("weight", "bias"):
                renames[f"transformer.h.{i}.{hf}.{suffix}"] = f"blk.{i}.{gg}.{suffix}"
    written = {t.name: t for t in reader.tensors}
    assert set(written) == set(renames.values())  # no output.weight: embeddings are tied
    for hf, gg in renames.items():
        t = written[gg]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert np.array_equal(np.asarray(t.data).reshape(source[hf].shape), source[hf]), gg
    assert written["blk.0.attn_qkv.weight"].shape.tolist() == [128, 128 + 2 * 16]


def write_bigcode(folder, *, n_embd=64, n_head=4, qkv_rows=None, n_ff=None, lm_head=False, **config):
    """A one-layer float32 GPTBigCode checkpoint with the StarCoder tokenizer; shapes can be bent."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    vocab, n_ff = 49153, n_ff or 4 * n_embd
    qkv_rows = qkv_rows or n_embd + 2 * (n_embd // n_head)
    shapes = {"transformer.wte.weight": (vocab, n_embd), "transformer.wpe.weight": (512, n_embd),
              "transformer.ln_f.weight": (n_embd,), "transformer.ln_f.bias": (n_embd,),
              "transformer.h.0.ln_1.weight": (n_embd,), "transformer.h.0.ln_1.bias": (n_embd,),
              "transformer.h.0.ln_2.weight": (n_embd,), "transformer.h.0.ln_2.bias": (n_embd,),
              "transformer.h.0.attn.c_attn.weight": (qkv_rows, n_embd), "transformer.h.0.attn.c_attn.bias": (qkv_rows,),
              "transformer.h.0.attn.c_proj.weight": (n_embd, n_embd), "transformer.h.0.attn.c_proj.bias": (n_embd,),
              "transformer.h.0.mlp.c_fc.weight": (n_ff, n_embd), "transformer.h.0.mlp.c_fc.bias": (n_ff,),
              "transformer.h.0.mlp.c_proj.weight": (n_embd, n_ff), "transformer.h.0.mlp.c_proj.bias": (n_embd,)}
    if lm_head:
        shapes["lm_head.weight"] = (vocab, n_embd)
    tensors = {name: rng.standard_normal(shape, dtype=np.float32) * 0.02 for name, shape in shapes.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["GPTBigCodeForCausalLM"], "model_type": "gpt_bigcode", "vocab_size": vocab,
        "n_embd": n_embd, "n_layer": 1, "n_head": n_head, "n_positions": 512, "multi_query": True,
        "layer_norm_epsilon": 1e-5, **config}))
    (folder / "tokenizer.json").write_bytes(STARCODER_JSON.read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|endoftext|>",
                                                              "eos_token": "<|endoftext|>"}))
    return tensors


def test_untied_lm_head_becomes_output(tmp_path):
    tensors = write_bigcode(tmp_path / "ckpt", lm_head=True)
    out = tmp_path / "out.gguf"
    result = convert(tmp_path / "ckpt", out)
    assert result.file_type == "F16"  # auto on a float32 checkpoint, as llama.cpp decides
    output = next(t for t in gguf.GGUFReader(out).tensors if t.name == "output.weight")
    assert output.tensor_type == gguf.GGMLQuantizationType.F16
    want = tensors["lm_head.weight"].astype(np.float16)
    assert np.array_equal(np.asarray(output.data).reshape(want.shape), want)


@pytest.mark.parametrize("bend", [dict(qkv_rows=3 * 64, multi_query=False), dict(n_ff=200, n_inner=200)])
def test_shapes_llama_cpp_cannot_load_are_refused(tmp_path, bend):
    """llama.cpp writes one KV head and a 4x MLP whatever config.json says; a checkpoint that differs
    would give a file llama.cpp cannot load, so it is refused with the tensor named, nothing written."""
    write_bigcode(tmp_path / "ckpt", **bend)
    out = tmp_path / "out.gguf"
    with pytest.raises(CheckpointError) as err:
        convert(tmp_path / "ckpt", out)
    assert err.value.tensor.startswith("transformer.h.0.")
    assert not out.exists()


# ---- llama.cpp itself loads what we wrote and computes what the Hugging Face model computes --------

def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def bigcode_forward(folder, tokens: list[int]) -> np.ndarray:
    """GPTBigCodeForCausalLM (multi-query attention) in float64, following the Hugging Face modeling code."""
    from reference_forward import gelu_tanh, load_checkpoint

    cfg, w = load_checkpoint(folder)
    n, heads, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd, seq = n // heads, len(tokens)
    x = w["transformer.wte.weight"][np.asarray(tokens)] + w["transformer.wpe.weight"][:seq]
    causal = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.c_attn.weight"].T + w[p + "attn.c_attn.bias"]
        q = qkv[:, :n].reshape(seq, heads, hd).transpose(1, 0, 2)
        k, v = qkv[:, n:n + hd], qkv[:, n + hd:]  # one head shared by all query heads
        scores = np.where(causal, -np.inf, q @ k.T / np.sqrt(hd))
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        att = (probs @ v).transpose(1, 0, 2).reshape(seq, n)
        x = x + att @ w[p + "attn.c_proj.weight"].T + w[p + "attn.c_proj.bias"]
        h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = gelu_tanh(h @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    return x @ w["transformer.wte.weight"].T  # tied embeddings


@pytest.mark.llama
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_llama_cpp_runs_it_like_hugging_face(golden_checkpoint, tmp_path, outtype):
    pytest.importorskip("llama_cpp")
    from modelpack.llamacpp import load_model, prompt_logits, tokenize

    folder = golden_checkpoint("g1")
    out = tmp_path / "g1.gguf"
    convert(folder, out, outtype=outtype)
    model = load_model(out, n_ctx=64, n_threads=2, logits_all=True, exact=True)
    try:
        tokens = tokenize(model, "User:def add(a, b): return a+b<|end_of_turn|>Assistant:", add_bos=False)
        assert 49152 in tokens and tokens[0] != 0  # <|end_of_turn|> parsed as one token; no BOS for StarCoder
        got = prompt_logits(model, tokens)
    finally:
        model.close()
    expected = bigcode_forward(folder, tokens)
    assert got.shape == expected.shape == (len(tokens), 49153)
    rel = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert rel < (1e-3 if outtype == "f32" else 5e-3), f"llama.cpp differs from the reference by {rel:.2e}"


@pytest.mark.llama
def test_llama_cpp_tokenizes_our_vocabulary_like_its_own(golden_checkpoint, tmp_path):
    """llama.cpp's tokenizer test vectors for StarCoder, through the vocabulary we wrote."""
    pytest.importorskip("llama_cpp")
    from modelpack.llamacpp import load_model, tokenize

    from test_vocab_bpe import STARCODER_GGUF, ggml_vocab_vectors

    out = tmp_path / "g1.gguf"
    convert(golden_checkpoint("g1"), out, outtype="f16")
    model = load_model(out, vocab_only=True)
    try:
        for text, ids in ggml_vocab_vectors(STARCODER_GGUF):
            assert tokenize(model, text, add_bos=False) == ids, text
    finally:
        model.close()
