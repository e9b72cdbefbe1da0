"""`modelpack quantize` / requantize: same bytes as llama-quantize."""

from __future__ import annotations

import ctypes
import json
import os

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

from conftest import DATA
from gguf_digest import digest
from modelpack.cli import main
from modelpack.errors import GGUFError, OutputExistsError, QuantizationError
from modelpack.quant import quantize, requantize
from modelpack.quant.mixes import parse_mix, quantize_order, tensor_types


def write_float_gguf(path, *, hidden=256, ffn=512, layers=2, heads=4, kv_heads=2, vocab=300,
                     dtype=T.BF16, tied=False, seed=0, spike: str | None = None):
    """A small llama GGUF as convert_hf_to_gguf.py would write it (float tensors, norms F32)."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_file_type({T.F32: 0, T.F16: 1, T.BF16: 32}[dtype])
    w.add_vocab_size(vocab)
    w.add_quantization_version(2)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    hd = hidden // heads
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    if not tied:
        shapes["output.weight"] = (vocab, hidden)
    for i in range(layers):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (hidden,), p + "attn_q.weight": (hidden, hidden),
            p + "attn_k.weight": (kv_heads * hd, hidden), p + "attn_v.weight": (kv_heads * hd, hidden),
            p + "attn_output.weight": (hidden, hidden), p + "ffn_norm.weight": (hidden,),
            p + "ffn_gate.weight": (ffn, hidden), p + "ffn_up.weight": (ffn, hidden),
            p + "ffn_down.weight": (hidden, ffn)})
    for name, shape in shapes.items():
        a = (rng.standard_t(5, shape) * 0.02).astype(np.float32)
        if name == spike:
            a[1, 200] = 1e12  # row 1 (one K block per row): too large for an fp16 scale
        if len(shape) == 1 or dtype == T.F32:
            w.add_tensor(name, a)
        elif dtype == T.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gq.quantize(a, T.BF16), raw_dtype=T.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_quantize(src, dst, mix: str) -> None:
    """llama.cpp's own quantizer (llama_model_quantize in libllama)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = parse_mix(mix).file_type
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


VARIANTS = {
    # gqa 2, untied, all rows multiples of 256
    "plain": dict(),
    # tied embeddings, gqa 4, rows of 320 (K-quant fallbacks), 9 layers (counters)
    "odd": dict(hidden=320, ffn=768, layers=9, heads=4, kv_heads=1, vocab=100, tied=True, seed=3),
    # F32 input with ffn rows of 528 (no 32-block fits: F16)
    "f32": dict(hidden=256, ffn=528, layers=3, heads=4, kv_heads=1, vocab=64, dtype=T.F32, seed=4),
}


@pytest.mark.llama
@pytest.mark.parametrize("variant,mixes", [
    ("plain", ["Q4_K_M", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q5_1", "F16", "BF16"]),
    ("odd", ["Q4_K_S", "Q5_K_M", "Q2_K", "Q3_K_M", "Q6_K", "Q8_0"]),
    ("f32", ["Q4_0", "Q4_1", "Q5_K_S", "Q5_0", "F32"]),
])
def test_same_bytes_as_llama_quantize(tmp_path, variant, mixes):
    src = write_float_gguf(tmp_path / "in.gguf", **VARIANTS[variant])
    for mix in mixes:
        llama_quantize(src, tmp_path / "ref.gguf", mix)
        requantize(src, tmp_path / "ours.gguf", mix.lower(), force=True)
        ref, ours = (tmp_path / "ref.gguf").read_bytes(), (tmp_path / "ours.gguf").read_bytes()
        assert ref == ours, (variant, mix, digest(tmp_path / "ref.gguf") == digest(tmp_path / "ours.gguf"))


def test_layout_and_data(tmp_path):
    """Without llama.cpp: KV order, tensor order, types and data follow the rules."""
    src = write_float_gguf(tmp_path / "in.gguf", dtype=T.F16, layers=3)
    out = tmp_path / "out.gguf"
    result = requantize(src, out, "Q4_K_M", threads=2)
    assert result["file_type"] == 15 and result["tensors"] == 3 * 9 + 3
    r_in, r_out = GGUFReader(src), GGUFReader(out)
    keys_in = [f.name for f in r_in.fields.values() if not f.name.startswith("GGUF.")]
    keys_out = [f.name for f in r_out.fields.values() if not f.name.startswith("GGUF.")]
    tail = ["general.quantization_version", "general.file_type"]
    assert keys_out == [k for k in keys_in if k not in tail] + tail
    assert r_out.get_field("general.file_type").contents() == 15
    names = [t.name for t in r_in.tensors]
    assert [t.name for t in r_out.tensors] == quantize_order(names)
    want = tensor_types([(t.name, tuple(t.shape)) for t in r_in.tensors], "Q4_K_M", n_layer=3)
    by_in = {t.name: t for t in r_in.tensors}
    for t in r_out.tensors:
        assert t.tensor_type == want[t.name]
        assert t.data_offset % 32 == 0
        src_t = by_in[t.name]
        x = np.asarray(src_t.data).astype(np.float32).reshape(-1, int(src_t.shape[0]))
        assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(x.shape[0], -1),
                              quantize(x, want[t.name], backend="numpy")), t.name


def test_refuses_overwrite_and_quantized_input(tmp_path):
    src = write_float_gguf(tmp_path / "in.gguf", layers=1)
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        requantize(src, out, "Q8_0")
    assert out.read_bytes() == b"keep"
    requantize(src, out, "Q8_0", force=True)
    with pytest.raises(GGUFError) as err:
        requantize(out, tmp_path / "again.gguf", "Q4_K_M")
    assert "Q8_0" in str(err.value) and not (tmp_path / "again.gguf").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def test_inf_scale_names_tensor_and_block(tmp_path):
    src = write_float_gguf(tmp_path / "in.gguf", layers=1, dtype=T.F32, spike="blk.0.ffn_up.weight")
    with pytest.raises(QuantizationError) as err:
        requantize(src, tmp_path / "out.gguf", "Q4_K_M")
    assert err.value.tensor == "blk.0.ffn_up.weight" and err.value.block == 1
    assert not (tmp_path / "out.gguf").exists()


def test_cli_quantize(tmp_path, capsys):
    src = write_float_gguf(tmp_path / "in.gguf", layers=1)
    assert main(["quantize", str(src), str(tmp_path / "o.gguf"), "q8_0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mix"] == "Q8_0" and result["file_type"] == 7 and (tmp_path / "o.gguf").exists()
    assert main(["quantize", str(src), str(tmp_path / "o.gguf"), "Q9_K"]) == 2
    assert "Q4_K_M" in capsys.readouterr().err


# ---- golden digests: the bf16 conversion requantized by llama-quantize ------------------------

def _digest(path) -> dict:
    return json.loads(json.dumps(digest(path), default=str))


def _convert():
    convert_mod = pytest.importorskip("modelpack.convert")
    if not hasattr(convert_mod, "convert"):
        pytest.skip("modelpack.convert.convert not available")
    return convert_mod.convert


@pytest.mark.parametrize("ckpt,mixes", [("s1", ["Q4_K_M"]), ("e1", ["Q4_K_S"])])
def test_requantize_matches_golden_digests(golden_checkpoint, tmp_path, ckpt, mixes):
    convert = _convert()
    bf16 = tmp_path / "bf16.gguf"
    convert(golden_checkpoint(ckpt), bf16, outtype="bf16")
    for mix in mixes:
        requantize(bf16, tmp_path / f"{mix}.gguf", mix)
        assert _digest(tmp_path / f"{mix}.gguf") == json.loads((DATA / "convert" / f"{ckpt}-{mix}.json").read_text())


@pytest.mark.parametrize("ckpt,mix", [("s2", "Q4_K_M")])
def test_convert_quant_matches_golden_digests(golden_checkpoint, tmp_path, ckpt, mix):
    convert = _convert()
    out = tmp_path / "q.gguf"
    convert(golden_checkpoint(ckpt), out, quant=mix.lower())
    assert _digest(out) == json.loads((DATA / "convert" / f"{ckpt}-{mix}.json").read_text())
