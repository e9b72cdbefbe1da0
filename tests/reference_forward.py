"""A small numpy forward pass of Llama/Mistral and Gemma, read straight from Hugging Face weights.

Deliberately independent of modelpack: it parses safetensors itself and follows the Hugging Face
modeling code (LlamaForCausalLM, MistralForCausalLM, GemmaForCausalLM), so agreement with
llama.cpp running our GGUF proves the conversion (Q/K permutation, Gemma's norm offset and
embedding scale, tied embeddings) whatever llama.cpp's own converter does.

Computed in float64 so the reference itself adds no rounding worth mentioning.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as float64 arrays (BF16 widened exactly)."""
    raw = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    body = memoryview(raw)[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = body[start:end]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=_DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).astype(np.float64)
    return out


def load_checkpoint(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    weights: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(read_safetensors(shard))
    return config, weights


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """x: [heads, seq, head_dim]; Hugging Face's convention (halves, not interleaved pairs)."""
    dim = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    freqs = np.outer(positions, inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return x * np.cos(emb) + rotate_half(x) * np.sin(emb)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def attention(x: np.ndarray, w: dict, pre: str, cfg: dict, positions: np.ndarray) -> np.ndarray:
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    seq = x.shape[0]
    q = (x @ w[pre + "self_attn.q_proj.weight"].T).reshape(seq, n_head, head_dim).transpose(1, 0, 2)
    k = (x @ w[pre + "self_attn.k_proj.weight"].T).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
    v = (x @ w[pre + "self_attn.v_proj.weight"].T).reshape(seq, n_kv, head_dim).transpose(1, 0, 2)
    theta = cfg.get("rope_theta", 10000.0)
    q, k = rope(q, positions, theta), rope(k, positions, theta)
    group = n_head // n_kv
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
    causal = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    window = cfg.get("sliding_window")
    if window:  # Mistral: a token sees at most `window` previous positions
        causal |= np.tril(np.ones((seq, seq), dtype=bool), k=-window)
    scores = np.where(causal, -np.inf, scores)
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = (probs @ v).transpose(1, 0, 2).reshape(seq, n_head * head_dim)
    return out @ w[pre + "self_attn.o_proj.weight"].T


def forward(folder: Path, tokens: list[int]) -> np.ndarray:
    """Logits [len(tokens), vocab] for one sequence starting at position 0."""
    cfg, w = load_checkpoint(folder)
    gemma = cfg["model_type"] == "gemma"
    eps = cfg["rms_norm_eps"]
    # Gemma stores norm weights as offsets from 1 and scales embeddings by sqrt(hidden).
    norm_w = (lambda t: 1.0 + t) if gemma else (lambda t: t)
    act = gelu_tanh if gemma else silu
    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    if gemma:
        x = x * math.sqrt(cfg["hidden_size"])
    positions = np.arange(len(tokens), dtype=np.float64)
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        h = rms_norm(x, norm_w(w[pre + "input_layernorm.weight"]), eps)
        x = x + attention(h, w, pre, cfg, positions)
        h = rms_norm(x, norm_w(w[pre + "post_attention_layernorm.weight"]), eps)
        gate = h @ w[pre + "mlp.gate_proj.weight"].T
        up = h @ w[pre + "mlp.up_proj.weight"].T
        x = x + (act(gate) * up) @ w[pre + "mlp.down_proj.weight"].T
    x = rms_norm(x, norm_w(w["model.norm.weight"]), eps)
    head = w.get("lm_head.weight")
    if head is None or cfg.get("tie_word_embeddings"):
        head = w["model.embed_tokens.weight"]
    return x @ head.T
