"""llama-quantize's mixes: which type each tensor gets, as data plus one small function.

Facts from llama.cpp's src/llama-quant.cpp (llama_tensor_get_type_impl and friends), no imatrix,
dense models (no experts). A tensor list is given in GGUF terms: (name, shape as GGUF stores it,
ne0 = row length first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from modelpack.errors import UnknownQuantError


@dataclass(frozen=True)
class Mix:
    name: str
    file_type: int  # general.file_type (llama_ftype)
    default_type: T
    # per tensor category: a rule name from RULES below (category -> rule)
    rules: dict[str, str] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return self.default_type not in (T.F32, T.F16, T.BF16)


# Rules per category; each is resolved in `_rule_type`.
_Q2_K = {"attn_v": "q2k_attn_v", "ffn_down": "Q3_K", "attn_output": "Q3_K"}
_Q3_K_M = {"attn_v": "q3km_attn_v", "ffn_down": "q3km_ffn_down", "attn_output": "Q4_K"}
_Q3_K_L = {"attn_v": "Q5_K", "ffn_down": "Q5_K", "attn_output": "Q5_K"}
_Q4_K_S = {"attn_v": "first4_Q5_K", "ffn_down": "first_eighth_Q5_K"}
_Q4_K_M = {"attn_v": "more_bits_Q6_K", "ffn_down": "more_bits_layer_Q6_K"}
_Q5_K_M = {"attn_v": "more_bits_Q6_K", "ffn_down": "more_bits_layer_Q6_K"}

MIXES: dict[str, Mix] = {
    m.name: m
    for m in (
        Mix("F32", 0, T.F32),
        Mix("F16", 1, T.F16),
        Mix("BF16", 32, T.BF16),
        Mix("Q4_0", 2, T.Q4_0),
        Mix("Q4_1", 3, T.Q4_1),
        Mix("Q8_0", 7, T.Q8_0),
        Mix("Q5_0", 8, T.Q5_0),
        Mix("Q5_1", 9, T.Q5_1),
        Mix("Q2_K", 10, T.Q2_K, _Q2_K),
        Mix("Q3_K_S", 11, T.Q3_K),
        Mix("Q3_K_M", 12, T.Q3_K, _Q3_K_M),
        Mix("Q3_K_L", 13, T.Q3_K, _Q3_K_L),
        Mix("Q4_K_S", 14, T.Q4_K, _Q4_K_S),
        Mix("Q4_K_M", 15, T.Q4_K, _Q4_K_M),
        Mix("Q5_K_S", 16, T.Q5_K),
        Mix("Q5_K_M", 17, T.Q5_K, _Q5_K_M),
        Mix("Q6_K", 18, T.Q6_K),
    )
}

# Row length not a multiple of the block: what llama-quantize falls back to (types not listed,
# the 32-blocks, go to F16; so does a fallback whose block still does not divide the row).
FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}

# Category by substring, first match wins (tensor_get_category).
_CATEGORIES = (
    ("attn_qkv.weight", "attn_v"),  # category_is_attn_v: fused QKV follows the attn_v rules
    ("attn_kv_b.weight", "attn_v"),
    ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"),
    ("attn_q.weight", "attn_q"),
    ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"),
    ("ffn_gate", "ffn_gate"),
    ("ffn_down", "ffn_down"),
)

# Substrings of 2-D weights llama-quantize never quantizes (the ones that occur in dense LLMs).
_NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "attn_rel_b.weight", "position_embd", "token_types")

_LAYER = re.compile(r"^blk\.(\d+)\.")


def parse_mix(name: str) -> Mix:
    """A mix by name, in any case (q4_k_m)."""
    mix = MIXES.get(str(name).upper())
    if mix is None:
        raise UnknownQuantError(f"unknown quantization type {name!r}; valid: {', '.join(MIXES)}")
    return mix


def layer_of(name: str) -> int:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def quantize_order(names) -> list[str]:
    """llama-quantize's tensor order: by layer number (-1 for non-layer tensors), then name bytes."""
    return sorted(names, key=lambda n: (layer_of(n), n.encode()))


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, cat in _CATEGORIES:
        if needle in name:
            return cat
    return "other"


def allows_quantization(name: str, shape) -> bool:
    """Only 2-D (or 3-D) `*weight` tensors that are not norms are quantized."""
    if len(shape) < 2 or not name.endswith("weight"):
        return False
    return not any(s in name for s in _NEVER_QUANTIZED)


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _block(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


def _rule_type(rule: str, current: T, *, i: int, n: int, n_gqa: int) -> T:
    """Resolve one rule for a tensor; `i`/`n` are its counter and the counter's total."""
    if rule in T.__members__:
        return T[rule]
    if rule == "q2k_attn_v":
        return T.Q4_K if n_gqa >= 4 else T.Q3_K
    if rule == "q3km_attn_v":
        return T.Q5_K if i < 2 else T.Q4_K
    if rule == "q3km_ffn_down":
        return T.Q5_K if i < n // 16 else T.Q4_K
    if rule == "first4_Q5_K":
        return T.Q5_K if i < 4 else current
    if rule == "first_eighth_Q5_K":
        return T.Q5_K if i < n // 8 else current
    if rule in ("more_bits_Q6_K", "more_bits_layer_Q6_K"):
        return T.Q6_K if use_more_bits(i, n) else current
    raise AssertionError(rule)


def _gqa(tensors) -> int:
    """n_head / n_head_kv from the attn_q and attn_v widths (1 when it cannot be told)."""
    q = next((s for n, s in tensors if n.endswith("attn_q.weight") and len(s) == 2), None)
    v = next((s for n, s in tensors if n.endswith("attn_v.weight") and len(s) == 2), None)
    if q is None or v is None or not v[1]:
        return 1
    return max(1, q[1] // v[1])


def n_gqa_of(n_head, n_head_kv) -> int | None:
    """llama.cpp's hparams.n_gqa() for layer 0 from the GGUF head counts (scalars or per-layer lists);
    None when the head count is unknown."""
    n_head, n_head_kv = (v[0] if isinstance(v, (list, tuple)) and v else v for v in (n_head, n_head_kv))
    if not isinstance(n_head, int):
        return None
    n_head_kv = n_head if n_head_kv is None else n_head_kv  # llama.cpp's default when the key is absent
    return n_head // n_head_kv if n_head_kv else 0


def tensor_types(tensors, mix: Mix | str, *, n_layer: int, arch: str | None = None,
                 n_gqa: int | None = None) -> dict[str, T]:
    """Every tensor's target type under `mix`, as llama-quantize chooses it (no imatrix).

    `tensors` is [(gguf_name, gguf_shape)] (ne0 first); the counters run in llama-quantize's
    sorted order whatever order is given. Tensors that are not quantized are F32 (1-D, norms).
    `n_gqa` is n_head / n_head_kv from the model's key/values (see n_gqa_of); without it, it is
    guessed from the attn_q / attn_v widths, which a fused attn_qkv (StarCoder) does not allow.
    """
    if isinstance(mix, str):
        mix = parse_mix(mix)
    tensors = [(n, tuple(int(d) for d in s)) for n, s in tensors]
    shapes = dict(tensors)
    order = quantize_order(shapes)
    n_gqa = _gqa(tensors) if n_gqa is None else n_gqa
    n_attn_v = sum(1 for n in order if category(n) == "attn_v")
    tied = "output.weight" not in shapes
    # llama.cpp's 70B rule: llama with 80 layers and grouped-query attention
    is_70b = arch == "llama" and n_layer == 80 and n_gqa > 1
    counters = {"attn_v": 0, "ffn_down": 0}
    out: dict[str, T] = {}
    for name in order:
        shape = shapes[name]
        if not allows_quantization(name, shape):
            out[name] = T.F32
            continue
        if not mix.quantized:
            out[name] = mix.default_type
            continue
        cat = category(name)
        new = mix.default_type
        ncols = shape[0]
        if cat == "output" or (tied and cat == "token_embd"):
            if ncols % _block(new) != 0:
                new = T.Q8_0
            elif new != T.Q8_0:
                new = T.Q6_K
        elif cat in ("attn_v", "ffn_down"):
            i = counters[cat]
            n = n_attn_v if cat == "attn_v" else n_layer
            rule = mix.rules.get(cat)
            if rule is not None:
                new = _rule_type(rule, new, i=i, n=n, n_gqa=n_gqa)
            if cat == "attn_v" and is_70b and new in (T.Q3_K, T.Q4_K):
                new = T.Q5_K
            counters[cat] += 1
        elif cat in mix.rules:
            new = _rule_type(mix.rules[cat], new, i=0, n=0, n_gqa=n_gqa)
        if ncols % _block(new) != 0:
            new = FALLBACK.get(new, T.F16)  # 32-blocks have no fallback but F16
            if ncols % _block(new) != 0:
                new = T.F16
        out[name] = new
    return out
