"""modelpack against llama.cpp itself on checkpoints unlike the golden ones: convert_hf_to_gguf.py
(LLAMA_CONVERT_HF points at it; CI sets it) and llama_model_quantize from llama-cpp-python.

Each case is one that once differed or that exercises a path the golden vectors do not: row lengths
that are not multiples of 256 (quant fallbacks), multi-query StarCoder (n_gqa from the head counts),
the real Gemma vocabulary, tokenizer.json post-processors (the converter's newer gguf-py), a Hugging
Face repetition_penalty, F32 sources with tied embeddings. Skipped without LLAMA_CONVERT_HF."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import GEMMA_SPM, MISTRAL_SPM, STARCODER_JSON, make_checkpoint
from gguf_digest import digest
from modelpack.convert import convert
from modelpack.quant import requantize
from modelpack.quant.mixes import parse_mix

LLAMA_CONVERT = os.environ.get("LLAMA_CONVERT_HF")
pytestmark = pytest.mark.skipif(not LLAMA_CONVERT, reason="set LLAMA_CONVERT_HF to llama.cpp's convert_hf_to_gguf.py")


def llama_convert(ckpt: Path, out: Path, outtype: str) -> Path:
    pytest.importorskip("torch")
    subprocess.run([sys.executable, LLAMA_CONVERT, str(ckpt), "--outfile", str(out), "--outtype", outtype],
                   check=True, capture_output=True)
    return out


def llama_quantize(src: Path, dst: Path, mix: str) -> Path:
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = parse_mix(mix).file_type
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0
    return dst


def assert_same(ours: Path, ref: Path) -> None:
    got, want = digest(str(ours)), digest(str(ref))
    assert got["order"] == want["order"]
    bad = [n for n in want["tensors"] if got["tensors"].get(n) != want["tensors"][n]]
    assert not bad, f"tensors differ: {bad[:5]} e.g. ours {got['tensors'].get(bad[0])} ref {want['tensors'][bad[0]]}"
    assert got["kv"] == want["kv"]
    assert list(got["kv"]) == list(want["kv"])


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def read_bf16_as_f32(path: Path) -> dict[str, np.ndarray]:
    """A BF16 safetensors file (numpy has no bfloat16) as float32 arrays."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        bits = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=np.uint16).astype(np.uint32) << 16
        out[name] = bits.view(np.float32).reshape(info["shape"])
    return out


def ckpt(tmp_path: Path, *args: str) -> Path:
    return make_checkpoint(tmp_path / "ckpt", *args)


TEMPLATE_BOS = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def test_mqa_odd_shapes_q8_0(tmp_path):
    outtype = "q8_0"
    ck = ckpt(tmp_path, "--arch", "mistral", "--tokenizer", str(MISTRAL_SPM), "--hidden", "96", "--heads", "6",
              "--kv-heads", "1", "--layers", "3", "--ffn", "200", "--shards", "3", "--seed", "31", "--outliers")
    ref = llama_convert(ck, tmp_path / "ref.gguf", outtype)
    convert(ck, tmp_path / "ours.gguf", outtype=outtype)
    assert_same(tmp_path / "ours.gguf", ref)


def test_quant_fallbacks_rows_not_multiple_of_256(tmp_path):
    """hidden 320: every K-quant falls back; --quant and `quantize` both match convert + llama-quantize."""
    ck = ckpt(tmp_path, "--arch", "llama", "--tokenizer", str(MISTRAL_SPM), "--hidden", "320", "--heads", "5",
              "--kv-heads", "5", "--layers", "3", "--ffn", "864", "--shards", "2", "--seed", "32", "--outliers")
    auto = llama_convert(ck, tmp_path / "ref-auto.gguf", "auto")
    ref = llama_quantize(auto, tmp_path / "ref-q.gguf", "Q4_K_M")
    convert(ck, tmp_path / "ours.gguf", quant="Q4_K_M", threads=2)
    assert_same(tmp_path / "ours.gguf", ref)
    requantize(auto, tmp_path / "ours-rq.gguf", "Q4_K_M", threads=2)
    assert_same(tmp_path / "ours-rq.gguf", ref)


def test_starcoder_mqa_n_gqa_from_head_counts(tmp_path):
    """Fused attn_qkv hides n_gqa from the tensor shapes; llama-quantize reads it from the heads (5 / 1)."""
    ck = ckpt(tmp_path, "--arch", "gpt_bigcode", "--tokenizer", str(STARCODER_JSON), "--hidden", "320",
              "--heads", "5", "--layers", "1", "--shards", "1", "--seed", "33", "--outliers")
    auto = llama_convert(ck, tmp_path / "ref-auto.gguf", "auto")
    ref = llama_quantize(auto, tmp_path / "ref-q.gguf", "Q2_K")
    assert digest(str(ref))["tensors"]["blk.0.attn_qkv.weight"]["type"] == "Q5_0"  # Q4_K (n_gqa 5), fallen back
    convert(ck, tmp_path / "ours.gguf", quant="Q2_K", threads=2)
    assert_same(tmp_path / "ours.gguf", ref)
    requantize(auto, tmp_path / "ours-rq.gguf", "Q2_K", threads=2)
    assert_same(tmp_path / "ours-rq.gguf", ref)


def test_gemma_real_vocabulary(tmp_path):
    ck = ckpt(tmp_path, "--arch", "gemma", "--tokenizer", str(GEMMA_SPM), "--hidden", "64", "--heads", "4",
              "--kv-heads", "1", "--layers", "1", "--ffn", "128", "--shards", "2", "--seed", "34")
    ref = llama_convert(ck, tmp_path / "ref.gguf", "auto")
    convert(ck, tmp_path / "ours.gguf")
    assert_same(tmp_path / "ours.gguf", ref)


def test_spm_tokenizer_json_post_processor_and_sampling(tmp_path):
    """tokenizer.json's TemplateProcessing wins over add_bos_token=false; repetition_penalty is kept."""
    ck = ckpt(tmp_path, "--arch", "llama", "--tokenizer", str(MISTRAL_SPM), "--hidden", "128", "--heads", "4",
              "--kv-heads", "2", "--layers", "1", "--ffn", "352", "--shards", "1", "--seed", "35")
    tc = json.loads((ck / "tokenizer_config.json").read_text())
    added = [dict(id=int(i), **v) for i, v in tc["added_tokens_decoder"].items()]
    (ck / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": None,
        "post_processor": {"type": "Sequence", "processors": [BYTE_LEVEL, TEMPLATE_BOS]}, "decoder": None,
        "model": {"type": "BPE", "vocab": {}, "merges": []}}))
    edit_json(ck / "tokenizer_config.json", add_bos_token=False, add_eos_token=True)
    edit_json(ck / "generation_config.json", do_sample=True, temperature=0.6, top_p=0.9, repetition_penalty=1.1)
    ref = llama_convert(ck, tmp_path / "ref.gguf", "f16")
    convert(ck, tmp_path / "ours.gguf", outtype="f16")
    assert_same(tmp_path / "ours.gguf", ref)
    kv = digest(str(ref))["kv"]
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is False


def test_starcoder_byte_level_post_processor(tmp_path):
    """A ByteLevel post-processor means no BOS/EOS, even where tokenizer_config.json asks for BOS."""
    ck = ckpt(tmp_path, "--arch", "gpt_bigcode", "--tokenizer", str(STARCODER_JSON), "--hidden", "64",
              "--heads", "4", "--layers", "2", "--shards", "1", "--seed", "36")
    tj = json.loads((ck / "tokenizer.json").read_text())
    tj["post_processor"] = BYTE_LEVEL
    (ck / "tokenizer.json").write_text(json.dumps(tj))
    edit_json(ck / "tokenizer_config.json", add_bos_token=True)
    ref = llama_convert(ck, tmp_path / "ref.gguf", "bf16")
    convert(ck, tmp_path / "ours.gguf", outtype="bf16")
    assert_same(tmp_path / "ours.gguf", ref)


def test_f32_source_tied_without_lm_head(tmp_path):
    ck = ckpt(tmp_path, "--arch", "llama", "--tokenizer", str(MISTRAL_SPM), "--hidden", "64", "--heads", "2",
              "--kv-heads", "1", "--layers", "2", "--ffn", "96", "--shards", "1", "--seed", "37")
    shard = next(ck.glob("*.safetensors"))
    f32 = {k: v for k, v in read_bf16_as_f32(shard).items() if k != "lm_head.weight"}
    save_file(f32, str(shard), metadata={"format": "pt"})
    index = json.loads((ck / "model.safetensors.index.json").read_text())
    del index["weight_map"]["lm_head.weight"]
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    edit_json(ck / "config.json", tie_word_embeddings=True, torch_dtype="float32")
    ref = llama_convert(ck, tmp_path / "ref.gguf", "auto")
    convert(ck, tmp_path / "ours.gguf")
    assert_same(tmp_path / "ours.gguf", ref)
    assert digest(str(ref))["tensors"]["blk.0.attn_q.weight"]["type"] == "F16"  # auto: F32 source -> F16
