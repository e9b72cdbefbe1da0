"""Architecture tables: how a Hugging Face architecture becomes GGUF keys and tensors.

Each `Arch` is data: the GGUF architecture, the hyperparameter -> key list in the exact order
llama.cpp's convert_hf_to_gguf.py writes them, the vocabulary writer, HF tensors to drop, per-tensor
transforms and the shape every tensor must have given config.json.

How to add an architecture: in your own module (e.g. modelpack/convert/starcoder.py) build an
`Arch(...)` and call `register(arch, "YourHFArchForCausalLM", ...)` at import time, then add the
module's name to PLUGINS below so it is imported before the first lookup. Tensor names come from
gguf.TensorNameMap for `arch.gguf_arch`; the plan (plan.py) does the rest: dtype choice, order,
streaming, quantization.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Union

import gguf
import numpy as np

from modelpack.errors import SourceError

T = gguf.MODEL_TENSOR
PLUGINS = ("starcoder",)  # modules under modelpack.convert that register more architectures


@dataclass(frozen=True)
class HP:
    """Write `writer.<method>(hparams[k])` for the first key k present (skip if none, unless required)."""

    method: str
    keys: tuple[str, ...]
    required: bool = False


class _FileType:
    """Marks where general.file_type goes among the architecture keys."""


FILE_TYPE = _FileType()
KVEntry = Union[HP, _FileType, Callable[[gguf.GGUFWriter, dict], None]]


@dataclass(frozen=True)
class Transform:
    """What happens to one HF tensor on the way: rows reordered, and/or a constant added."""

    rows: Callable[[tuple[int, ...], dict], np.ndarray] | None = None  # (shape, hparams) -> row order
    add: float | None = None  # computed in the source's precision if F16, else float32


@dataclass(frozen=True)
class Arch:
    gguf_arch: gguf.MODEL_ARCH
    kv: tuple[KVEntry, ...]
    vocab: Callable  # (checkpoint, writer, hparams) -> None: writes the tokenizer.* keys
    drop: tuple[str, ...] = ()  # HF tensor names not converted
    transforms: tuple[tuple[str, Transform], ...] = ()  # (HF name suffix, transform), first match wins
    shapes: dict[gguf.MODEL_TENSOR, Callable[[dict], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def transform(self, hf_name: str) -> Transform | None:
        return next((t for suffix, t in self.transforms if hf_name.endswith(suffix)), None)


ARCHITECTURES: dict[str, Arch] = {}


def register(arch: Arch, *hf_names: str) -> Arch:
    for n in hf_names:
        ARCHITECTURES[n] = arch
    return arch


def _load_plugins() -> None:
    for mod in PLUGINS:
        try:
            importlib.import_module(f"modelpack.convert.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"modelpack.convert.{mod}":
                raise


def supported() -> list[str]:
    _load_plugins()
    return sorted(ARCHITECTURES)


def get_arch(hf_arch: str, *, path: str | None = None) -> Arch:
    names = supported()
    if hf_arch not in ARCHITECTURES:
        raise SourceError(f"unsupported architecture {hf_arch or '(none given)'!r}; supported: {', '.join(names)}",
                          path=path)
    return ARCHITECTURES[hf_arch]


# --- shared helpers --------------------------------------------------------------------------

def find(hp: dict, *keys: str):
    """The value of the first key present (llama.cpp's find_hparam), or None."""
    return next((hp[k] for k in keys if k in hp), None)


def head_dim(hp: dict) -> int:
    return hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]


def rope_parameters(hp: dict) -> dict:
    """The converter's view of RoPE settings (transformers 5 rope_parameters, or older rope_scaling)."""
    rp = dict(hp.get("rope_parameters", hp.get("rope_scaling")) or {})
    if "full_attention" not in rp and "sliding_attention" not in rp:
        if (local := find(hp, "local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                          "rope_local_base_freq")) is not None:
            rp["sliding_attention"] = {"rope_theta": local}
        if "rope_theta" not in rp and (theta := find(hp, "global_rope_theta", "rope_global_theta", "rope_theta_global",
                                                     "rope_theta", "rotary_emb_base")) is not None:
            rp["rope_theta"] = theta
        if "rope_type" not in rp and rp.get("type") is not None:
            rp["rope_type"] = rp["type"]
        if "original_max_position_embeddings" not in rp and hp.get("original_max_position_embeddings") is not None:
            rp["original_max_position_embeddings"] = hp["original_max_position_embeddings"]
    return rp


def rope_keys(w: gguf.GGUFWriter, hp: dict) -> None:
    """Rope scaling keys, then freq_base (and the sliding-window base), as TextModel writes them."""
    rp = rope_parameters(hp)
    full = rp.get("full_attention", rp)
    rtype, factor = full.get("rope_type"), full.get("factor")
    if rtype == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif rtype == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(full["original_max_position_embeddings"])
        for method, keys in (("add_rope_scaling_yarn_ext_factor", ("extrapolation_factor",)),
                             ("add_rope_scaling_yarn_attn_factor", ("attention_factor", "attn_factor")),
                             ("add_rope_scaling_yarn_beta_fast", ("beta_fast",)),
                             ("add_rope_scaling_yarn_beta_slow", ("beta_slow",))):
            if (v := find(full, *keys)) is not None:
                getattr(w, method)(v)
    elif rtype in ("su", "longrope"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    if (theta := full.get("rope_theta")) is not None:
        w.add_rope_freq_base(theta)
    if (swa := rp.get("sliding_attention", {}).get("rope_theta")) is not None:
        w.add_rope_freq_base_swa(swa)


def causal(w: gguf.GGUFWriter, hp: dict) -> None:
    if hp.get("is_causal") is False:
        w.add_causal_attention(False)


def head_length(w: gguf.GGUFWriter, hp: dict) -> None:
    if (hd := hp.get("head_dim")) is not None:
        w.add_key_length(hd)
        w.add_value_length(hd)


def permute_rows(heads_key: str) -> Callable[[tuple[int, ...], dict], np.ndarray]:
    """llama.cpp's rotary layout: within each head, interleave the two halves of the rows."""

    def order(shape: tuple[int, ...], hp: dict) -> np.ndarray:
        heads = hp[heads_key] if heads_key == "num_attention_heads" else \
            (hp.get(heads_key) or hp["num_attention_heads"])
        rows = shape[0]
        return np.arange(rows).reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(-1)

    return order


# Expected HF shapes ([out, in]) from hparams, shared by the llama-like architectures.
def _vocab(hp):
    return hp["vocab_size"]


def _q_rows(hp):
    return hp["num_attention_heads"] * head_dim(hp)


def _kv_rows(hp):
    return (hp.get("num_key_value_heads") or hp["num_attention_heads"]) * head_dim(hp)


LLAMA_SHAPES = {
    T.TOKEN_EMBD: lambda hp: (_vocab(hp), hp["hidden_size"]),
    T.OUTPUT: lambda hp: (_vocab(hp), hp["hidden_size"]),
    T.OUTPUT_NORM: lambda hp: (hp["hidden_size"],),
    T.ATTN_NORM: lambda hp: (hp["hidden_size"],),
    T.FFN_NORM: lambda hp: (hp["hidden_size"],),
    T.ATTN_Q: lambda hp: (_q_rows(hp), hp["hidden_size"]),
    T.ATTN_K: lambda hp: (_kv_rows(hp), hp["hidden_size"]),
    T.ATTN_V: lambda hp: (_kv_rows(hp), hp["hidden_size"]),
    T.ATTN_OUT: lambda hp: (hp["hidden_size"], _q_rows(hp)),
    T.FFN_GATE: lambda hp: (hp["intermediate_size"], hp["hidden_size"]),
    T.FFN_UP: lambda hp: (hp["intermediate_size"], hp["hidden_size"]),
    T.FFN_DOWN: lambda hp: (hp["hidden_size"], hp["intermediate_size"]),
}

# TextModel.set_gguf_parameters: the keys every text model gets, in order.
TEXT_KV: tuple[KVEntry, ...] = (
    HP("add_block_count", ("n_layers", "num_hidden_layers", "n_layer", "num_layers"), required=True),
    HP("add_context_length", ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                              "max_sequence_length", "model_max_length")),
    HP("add_embedding_length", ("hidden_size", "n_embd", "dim")),
    HP("add_feed_forward_length", ("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size",
                                   "n_inner", "hidden_dim")),
    HP("add_head_count", ("num_attention_heads", "n_head", "n_heads")),
    HP("add_head_count_kv", ("num_key_value_heads", "n_kv_heads")),
    causal,
    rope_keys,
    HP("add_layer_norm_rms_eps", ("rms_norm_eps", "norm_eps")),
    HP("add_layer_norm_eps", ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")),
    head_length,
    FILE_TYPE,
)


def _rope_dims(w: gguf.GGUFWriter, hp: dict) -> None:
    w.add_rope_dimension_count(head_dim(hp))


def _spm_vocab(checkpoint, writer, hp):
    from modelpack.convert.vocab_spm import add_sentencepiece_vocab

    add_sentencepiece_vocab(checkpoint, writer, hp)


def _gemma_vocab(checkpoint, writer, hp):
    from modelpack.convert.vocab_spm import add_gemma_vocab

    add_gemma_vocab(checkpoint, writer, hp)


LLAMA = register(Arch(
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    kv=(*TEXT_KV, HP("add_vocab_size", ("vocab_size",), required=True), _rope_dims),
    vocab=_spm_vocab,
    transforms=(
        ("q_proj.weight", Transform(rows=permute_rows("num_attention_heads"))),
        ("q_proj.bias", Transform(rows=permute_rows("num_attention_heads"))),
        ("k_proj.weight", Transform(rows=permute_rows("num_key_value_heads"))),
        ("k_proj.bias", Transform(rows=permute_rows("num_key_value_heads"))),
    ),
    shapes=LLAMA_SHAPES,
), "LlamaForCausalLM", "MistralForCausalLM")

GEMMA = register(Arch(
    gguf_arch=gguf.MODEL_ARCH.GEMMA,
    # GemmaModel.set_gguf_parameters: its own order, no rope or vocab-size keys
    kv=(
        HP("add_context_length", ("max_position_embeddings",), required=True),
        HP("add_embedding_length", ("hidden_size",), required=True),
        HP("add_block_count", ("num_hidden_layers",), required=True),
        HP("add_feed_forward_length", ("intermediate_size",), required=True),
        HP("add_head_count", ("num_attention_heads",), required=True),
        HP("add_head_count_kv", ("num_key_value_heads", "num_attention_heads"), required=True),
        HP("add_layer_norm_rms_eps", ("rms_norm_eps",), required=True),
        HP("add_key_length", ("head_dim",), required=True),
        HP("add_value_length", ("head_dim",), required=True),
        FILE_TYPE,
    ),
    vocab=_gemma_vocab,
    drop=("lm_head.weight",),  # tied to the embeddings
    transforms=(("norm.weight", Transform(add=1.0)),),  # HF Gemma stores RMSNorm weights as offsets from 1
    shapes={k: v for k, v in LLAMA_SHAPES.items() if k != T.OUTPUT},
), "GemmaForCausalLM")
