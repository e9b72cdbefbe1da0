"""Checkpoints unlike the golden ones: F16/F32 sources, tied embeddings, explicit head_dim, biases,
rope scaling, odd row lengths. Each test checks facts of llama.cpp's converter computed from the
source tensors; with LLAMA_CONVERT_HF pointing at llama.cpp's convert_hf_to_gguf.py (and torch
installed), the whole output is also compared with that script's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import MISTRAL_SPM
from gguf_digest import digest
from modelpack.checkpoint import open_checkpoint
from modelpack.convert import convert


def make_llama(out: Path, *, dtype=np.float16, hidden=128, layers=2, heads=4, kv=2, head_dim=None, ffn=176,
               tie=False, bias=False, rope=None, seed=0, arch="LlamaForCausalLM") -> Path:
    """A small llama-family checkpoint in F16 or F32 with the golden inputs' tokenizer files."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    hd, vocab = head_dim or hidden // heads, 32002

    def r(*shape, base=0.0):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02 + base).astype(dtype)

    t = {"model.embed_tokens.weight": r(vocab, hidden), "model.norm.weight": r(hidden, base=1.0)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t |= {p + "self_attn.q_proj.weight": r(heads * hd, hidden), p + "self_attn.k_proj.weight": r(kv * hd, hidden),
              p + "self_attn.v_proj.weight": r(kv * hd, hidden), p + "self_attn.o_proj.weight": r(hidden, heads * hd),
              p + "mlp.gate_proj.weight": r(ffn, hidden), p + "mlp.up_proj.weight": r(ffn, hidden),
              p + "mlp.down_proj.weight": r(hidden, ffn), p + "input_layernorm.weight": r(hidden, base=1.0),
              p + "post_attention_layernorm.weight": r(hidden, base=1.0),
              p + "self_attn.rotary_emb.inv_freq": np.arange(hd // 2, dtype=np.float32)}
        if bias:
            t |= {p + "self_attn.q_proj.bias": r(heads * hd), p + "self_attn.k_proj.bias": r(kv * hd)}
    if not tie:
        t["lm_head.weight"] = r(vocab, hidden)
    save_file(t, str(out / "model.safetensors"))
    cfg = {"architectures": [arch], "model_type": "mistral" if "Mistral" in arch else "llama", "vocab_size": vocab,
           "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
           "tie_word_embeddings": tie, "attention_bias": bias, "bos_token_id": 1, "eos_token_id": 2}
    if head_dim:
        cfg["head_dim"] = head_dim
    if rope:
        cfg["rope_scaling"] = rope
    (out / "config.json").write_text(json.dumps(cfg))
    shutil.copy(MISTRAL_SPM, out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "add_eos_token": False}))
    return out


VARIANTS = {
    "f16-tied-oddffn": dict(dtype=np.float16, tie=True, kv=4, ffn=176),
    "f16-mistral-headdim": dict(dtype=np.float16, hidden=128, heads=4, kv=2, head_dim=64, ffn=256,
                                arch="MistralForCausalLM", seed=2),
    "f32-bias-linear": dict(dtype=np.float32, bias=True, rope={"type": "linear", "factor": 2.0}, seed=3),
    "f16-llama3": dict(dtype=np.float16, kv=1, rope={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 8192}, seed=4),
}


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    root, made = tmp_path_factory.mktemp("variants"), {}

    def get(name):
        if name not in made:
            made[name] = make_llama(root / name, **VARIANTS[name])
        return made[name]

    return get


def tensors(path):
    r = gguf.GGUFReader(path)
    return {t.name: t for t in r.tensors}, {f.name: f.contents() for f in r.fields.values()}


def permuted(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_f16_source_tied_embeddings_and_q8_0_fallback(variant, tmp_path):
    ck = variant("f16-tied-oddffn")
    auto = convert(ck, tmp_path / "auto.gguf")
    assert auto.file_type == "F16"  # an F16 checkpoint's auto outtype
    t, kv = tensors(tmp_path / "auto.gguf")
    assert "output.weight" not in t and kv["general.file_type"] == 1
    src = open_checkpoint(ck)
    q = src.tensor("model.layers.0.self_attn.q_proj.weight").astype(np.float16)
    assert np.array_equal(np.asarray(t["blk.0.attn_q.weight"].data), permuted(q, 4))
    convert(ck, tmp_path / "q8.gguf", outtype="q8_0")
    t, _ = tensors(tmp_path / "q8.gguf")
    # ffn_down rows are 176 long, not a multiple of Q8_0's 32: the converter falls back to F16
    assert t["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert t["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


def test_explicit_head_dim(variant, tmp_path):
    convert(variant("f16-mistral-headdim"), tmp_path / "m.gguf", outtype="bf16")
    t, kv = tensors(tmp_path / "m.gguf")
    assert kv["llama.attention.key_length"] == 64 and kv["llama.rope.dimension_count"] == 64
    assert list(t["blk.0.attn_q.weight"].shape) == [128, 256]


def test_f32_source_bias_permuted_and_rope_scaling(variant, tmp_path):
    ck = variant("f32-bias-linear")
    assert convert(ck, tmp_path / "a.gguf").file_type == "F16"  # no 16-bit tensors: auto is F16
    t, kv = tensors(tmp_path / "a.gguf")
    assert kv["llama.rope.scaling.type"] == "linear" and kv["llama.rope.scaling.factor"] == 2.0
    assert "blk.0.attn_q.bias" in t and t["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    bias = open_checkpoint(ck).tensor("model.layers.0.self_attn.k_proj.bias")
    assert np.array_equal(np.asarray(t["blk.0.attn_k.bias"].data), permuted(bias, 2))


def test_llama3_rope_freqs(variant, tmp_path):
    convert(variant("f16-llama3"), tmp_path / "l3.gguf")
    t, _ = tensors(tmp_path / "l3.gguf")
    freqs = np.asarray(t["rope_freqs.weight"].data)
    assert list(t)[0] == "rope_freqs.weight" and freqs.shape == (16,)
    assert freqs[0] == 1.0 and freqs[-1] == 8.0 and np.all(np.diff(freqs) >= 0)


LLAMA_CONVERT = os.environ.get("LLAMA_CONVERT_HF")


@pytest.mark.skipif(not LLAMA_CONVERT, reason="set LLAMA_CONVERT_HF to llama.cpp's convert_hf_to_gguf.py")
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("outtype", ["auto", "f32", "q8_0"])
def test_same_as_llama_cpp_converter(variant, tmp_path, name, outtype):
    pytest.importorskip("torch")
    ck = variant(name)
    ref = tmp_path / "ref.gguf"
    subprocess.run([sys.executable, LLAMA_CONVERT, str(ck), "--outfile", str(ref), "--outtype", outtype],
                   check=True, capture_output=True)
    convert(ck, tmp_path / "ours.gguf", outtype=outtype)
    got, want = digest(str(tmp_path / "ours.gguf")), digest(str(ref))
    assert got == want


# The converter runs the gguf-py beside it, newer than the PyPI release: modelpack.convert.special
# restores its SpecialVocab rules (these facts are that gguf-py's; the differential tests compare files).
TEMPLATE_BOS = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


@pytest.mark.parametrize("post, config, want", [
    (TEMPLATE_BOS, {"add_bos_token": False}, {"bos": True}),  # the post-processor wins
    (TEMPLATE_BOS, {"bos_token": None}, {"bos": True}),  # the template names the BOS token
    (BYTE_LEVEL, {"add_bos_token": True, "add_eos_token": True}, {"bos": False, "eos": False}),
    ({"type": "Sequence", "processors": [BYTE_LEVEL, TEMPLATE_BOS]}, {"add_eos_token": True}, {"bos": True, "eos": False}),
    (None, {"add_bos_token": False, "add_eos_token": True}, {"bos": False, "eos": True}),
])
def test_special_vocab_post_processor_flags(tmp_path, post, config, want):
    from modelpack.convert.special import SpecialVocab
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": [], "post_processor": post,
                                                         "normalizer": {"type": "Lowercase"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", **config}))
    special = SpecialVocab(tmp_path, load_merges=False)
    assert {k: special.add_special_token.get(k) for k in want} == want
    w = gguf.GGUFWriter(None, "llama")
    special.add_to_gguf(w, quiet=True)
    assert w.kv_data[0]["tokenizer.ggml.normalizer.lowercase"].value is True


def test_repetition_penalty_and_named_templates_in_stable_order(tmp_path):
    ck = make_llama(tmp_path / "ck", seed=9)
    (ck / "generation_config.json").write_text(json.dumps({"repetition_penalty": 1.25, "temperature": 0.5}))
    templates = [{"name": n, "template": "{{ x }}"} for n in ("default", "tool_use", "rag", "zeta")]
    (ck / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "chat_template": templates}))
    convert(ck, tmp_path / "out.gguf", outtype="f16")
    r = gguf.GGUFReader(str(tmp_path / "out.gguf"))
    assert r.get_field("general.sampling.penalty_repeat").contents() == pytest.approx(1.25)
    assert r.get_field("tokenizer.chat_templates").contents() == ["tool_use", "rag", "zeta"]
