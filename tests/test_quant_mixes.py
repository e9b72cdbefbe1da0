"""Mix rules (which type each tensor gets) against the digests of llama-quantize's own output."""

from __future__ import annotations

import json

import pytest
from gguf import GGMLQuantizationType as T

from conftest import DATA
from modelpack.errors import UnknownQuantError
from modelpack.quant.mixes import MIXES, parse_mix, quantize_order, tensor_types, use_more_bits

CONVERT = DATA / "convert"
N_LAYER = {"s1": 2, "s2": 4, "e1": 2, "g1": 2}
GOLDEN_MIXES = ["Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]


def load(name: str) -> dict:
    return json.loads((CONVERT / f"{name}.json").read_text())


def bf16_tensors(ckpt: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(v["shape"])) for n, v in load(f"{ckpt}-bf16")["tensors"].items()]


@pytest.mark.parametrize("ckpt", sorted(N_LAYER))
@pytest.mark.parametrize("mix", GOLDEN_MIXES)
def test_types_order_and_file_type_match_llama_quantize(ckpt, mix):
    want = load(f"{ckpt}-{mix}")
    tensors = bf16_tensors(ckpt)
    got = tensor_types(tensors, mix.lower(), n_layer=N_LAYER[ckpt])
    assert {n: t.name for n, t in got.items()} == {n: v["type"] for n, v in want["tensors"].items()}
    assert quantize_order([n for n, _ in tensors]) == want["order"]
    assert parse_mix(mix).file_type == want["kv"]["general.file_type"]
    assert list(want["kv"])[-2:] == ["general.quantization_version", "general.file_type"]


def test_parse_mix_any_case_and_unknown_lists_valid_names():
    assert parse_mix("q4_k_m") is MIXES["Q4_K_M"]
    assert parse_mix("Q5_k_S").default_type == T.Q5_K
    with pytest.raises(UnknownQuantError) as err:
        parse_mix("Q4_K_X")
    for name in ("Q4_K_M", "Q8_0", "BF16", "Q3_K_L"):
        assert name in str(err.value)


def test_use_more_bits_for_32_layers():
    # gguf-conversion.md: true for 0,1,2,3,6,9,...,27,28,29,30,31
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def llama_like(n_layer: int, hidden: int, kv: int, ffn: int, tied: bool = False):
    out = [("token_embd.weight", (hidden, 32000)), ("output_norm.weight", (hidden,))]
    if not tied:
        out.append(("output.weight", (hidden, 32000)))
    for i in range(n_layer):
        p = f"blk.{i}."
        out += [(p + "attn_q.weight", (hidden, hidden)), (p + "attn_k.weight", (hidden, kv)),
                (p + "attn_v.weight", (hidden, kv)), (p + "attn_output.weight", (hidden, hidden)),
                (p + "ffn_gate.weight", (hidden, ffn)), (p + "ffn_up.weight", (hidden, ffn)),
                (p + "ffn_down.weight", (ffn, hidden)), (p + "attn_norm.weight", (hidden,)),
                (p + "ffn_norm.weight", (hidden,))]
    return out


def test_counters_run_in_sorted_order_for_many_layers():
    # blk.10 sorts after blk.9 (by layer number), so the attn_v counter follows layers
    tensors = llama_like(12, 512, 128, 1024)
    got = tensor_types(list(reversed(tensors)), "Q4_K_M", n_layer=12)
    for i in range(12):
        want = T.Q6_K if use_more_bits(i, 12) else T.Q4_K
        assert got[f"blk.{i}.attn_v.weight"] == want and got[f"blk.{i}.ffn_down.weight"] == want


def test_low_bit_mixes_and_fallbacks():
    tensors = llama_like(16, 4096, 1024, 11008)  # n_gqa 4
    q2 = tensor_types(tensors, "Q2_K", n_layer=16)
    assert q2["blk.0.attn_v.weight"] == T.Q4_K and q2["blk.3.ffn_down.weight"] == T.Q3_K
    assert q2["blk.3.attn_output.weight"] == T.Q3_K and q2["blk.3.attn_q.weight"] == T.Q2_K
    q3m = tensor_types(tensors, "Q3_K_M", n_layer=16)
    assert [q3m[f"blk.{i}.attn_v.weight"] for i in range(3)] == [T.Q5_K, T.Q5_K, T.Q4_K]
    assert q3m["blk.0.ffn_down.weight"] == T.Q5_K and q3m["blk.1.ffn_down.weight"] == T.Q4_K
    q3l = tensor_types(tensors, "Q3_K_L", n_layer=16)
    assert q3l["blk.5.attn_output.weight"] == T.Q5_K and q3l["blk.5.ffn_up.weight"] == T.Q3_K
    # 11040 is not a multiple of 256: ffn_down (row length 11040) falls back
    tensors = llama_like(16, 4096, 1024, 11040)
    assert tensor_types(tensors, "Q2_K", n_layer=16)["blk.9.ffn_down.weight"] == T.Q4_0
    assert tensor_types(tensors, "Q4_K_S", n_layer=16)["blk.9.ffn_down.weight"] == T.Q5_0
    assert tensor_types(tensors, "Q6_K", n_layer=16)["blk.9.ffn_down.weight"] == T.Q8_0
    odd = tensor_types([("blk.0.ffn_down.weight", (528, 64))], "Q4_0", n_layer=1)
    assert odd["blk.0.ffn_down.weight"] == T.F16
    tied = tensor_types(llama_like(2, 512, 512, 1024, tied=True), "Q4_0", n_layer=2)
    assert tied["token_embd.weight"] == T.Q6_K and tied["output_norm.weight"] == T.F32
    assert tensor_types(llama_like(2, 512, 512, 1024), "bf16", n_layer=2)["blk.1.ffn_up.weight"] == T.BF16


def test_n_gqa_from_head_counts_for_fused_qkv():
    """StarCoder's fused attn_qkv hides n_gqa from the shapes; llama-quantize takes it from the heads."""
    from modelpack.quant.mixes import n_gqa_of
    tensors = [("blk.0.attn_qkv.weight", (512, 640)), ("blk.0.ffn_down.weight", (2048, 512))]
    assert n_gqa_of(8, 1) == 8 and n_gqa_of(5, None) == 1 and n_gqa_of([6, 6], [2, 2]) == 3 and n_gqa_of(None, 1) is None
    assert tensor_types(tensors, "Q2_K", n_layer=1, n_gqa=n_gqa_of(8, 1))["blk.0.attn_qkv.weight"] == T.Q4_K
    assert tensor_types(tensors, "Q2_K", n_layer=1, n_gqa=n_gqa_of(3, 1))["blk.0.attn_qkv.weight"] == T.Q3_K
