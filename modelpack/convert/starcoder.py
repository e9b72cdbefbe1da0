"""GPTBigCodeForCausalLM (StarCoder, StarCoderPlus, OpenCoderPlus) -> llama.cpp's "starcoder" architecture.

Facts from convert_hf_to_gguf.py's StarCoderModel: keys in the order below (feed_forward_length is
always 4 * n_embd and head_count_kv always 1: llama.cpp's starcoder graph is multi-query attention
with a 4x MLP), a byte-level BPE vocabulary from tokenizer.json, and tensors renamed by
gguf.TensorNameMap with no transform: the fused c_attn (Q rows, then one K head, then one V head)
is written as blk.N.attn_qkv as it is, biases and position embeddings included (position_embd is
one of the kinds the converter keeps in F32). Embeddings are tied: there is no output.weight unless
the checkpoint has an lm_head.

Tensor shapes are checked against exactly those assumptions, so a checkpoint llama.cpp could not load
(multi_query false, n_inner other than 4 * n_embd) is refused instead of written.
"""

from __future__ import annotations

from typing import Callable

import gguf

from modelpack.convert.arch import FILE_TYPE, HP, Arch, T, register
from modelpack.convert.vocab_bpe import load_bpe_vocab

# GPTBigCodeConfig's defaults, for configs that leave a field out (transformers fills them in
# before llama.cpp's converter sees them).
DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
            "layer_norm_epsilon": 1e-5}


def _hp(hp: dict, key: str):
    value = hp.get(key)
    return DEFAULTS[key] if value is None else value


def _head_dim(hp: dict) -> int:
    return _hp(hp, "n_embd") // _hp(hp, "n_head")


def _key(method: str, value: Callable[[dict], object]) -> Callable[[gguf.GGUFWriter, dict], None]:
    def write(writer: gguf.GGUFWriter, hp: dict) -> None:
        getattr(writer, method)(value(hp))
    write.__name__ = method
    return write


def _bpe_vocab(checkpoint, writer: gguf.GGUFWriter, hp: dict) -> None:
    load_bpe_vocab(checkpoint.path, vocab_size=_hp(hp, "vocab_size")).add_to_gguf(writer)


def _n(hp: dict) -> int:
    return _hp(hp, "n_embd")


# Expected HF shapes ([out, in]) of every tensor the converter writes.
SHAPES = {
    T.TOKEN_EMBD: lambda hp: (_hp(hp, "vocab_size"), _n(hp)),
    T.OUTPUT: lambda hp: (_hp(hp, "vocab_size"), _n(hp)),
    T.POS_EMBD: lambda hp: (_hp(hp, "n_positions"), _n(hp)),
    T.OUTPUT_NORM: lambda hp: (_n(hp),),
    T.ATTN_NORM: lambda hp: (_n(hp),),
    T.FFN_NORM: lambda hp: (_n(hp),),
    T.ATTN_QKV: lambda hp: (_n(hp) + 2 * _head_dim(hp), _n(hp)),  # one shared K and V head
    T.ATTN_OUT: lambda hp: (_n(hp), _n(hp)),
    T.FFN_UP: lambda hp: (4 * _n(hp), _n(hp)),
    T.FFN_DOWN: lambda hp: (_n(hp), 4 * _n(hp)),
}

STARCODER = register(Arch(
    gguf_arch=gguf.MODEL_ARCH.STARCODER,
    kv=(
        _key("add_context_length", lambda hp: _hp(hp, "n_positions")),
        _key("add_embedding_length", _n),
        _key("add_feed_forward_length", lambda hp: 4 * _n(hp)),
        HP("add_block_count", ("n_layer", "num_hidden_layers"), required=True),
        _key("add_head_count", lambda hp: _hp(hp, "n_head")),
        _key("add_head_count_kv", lambda hp: 1),
        _key("add_layer_norm_eps", lambda hp: _hp(hp, "layer_norm_epsilon")),
        FILE_TYPE,
    ),
    vocab=_bpe_vocab,
    shapes=SHAPES,
), "GPTBigCodeForCausalLM")
