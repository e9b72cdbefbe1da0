"""Quantization: one registry of kernels keyed by gguf.GGMLQuantizationType, and `quantize`.

Backends (each byte-identical to llama.cpp's reference quantizers, no imatrix):
  numpy  modelpack.quant.reference   readable; the spec
  numba  modelpack.quant.fast        compiled CPU kernels (nogil, no fastmath), split over threads
  torch  modelpack.quant.torch_backend  eager float32 ops; runs on CUDA when present
`backend="auto"` picks numba when it imports, else numpy; `device="cuda"` picks torch.
"""

from __future__ import annotations

import importlib
import threading
from typing import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

from modelpack.errors import QuantizationError, UnknownQuantError

from .mixes import MIXES, Mix, parse_mix, quantize_order, tensor_types  # noqa: F401

__all__ = ["MIXES", "Mix", "parse_mix", "tensor_types", "quantize_order", "quantize", "requantize",
           "resolve_backend", "available_backends", "backend_module", "QUANT_TYPES"]

BACKEND_MODULES = {
    "numpy": "modelpack.quant.reference",
    "numba": "modelpack.quant.fast",
    "torch": "modelpack.quant.torch_backend",
}

# Types every backend quantizes (block kernels).
QUANT_TYPES = (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)

# Byte offsets of the fp16 scales (d, dmin/m) inside each block: llama-quantize rejects a block
# where one of them is Inf or NaN.
SCALE_OFFSETS = {
    T.Q8_0: (0,), T.Q4_0: (0,), T.Q5_0: (0,), T.Q4_1: (0, 2), T.Q5_1: (0, 2),
    T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,),
}



def _to_f16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # out of range becomes Inf, as in ggml
        return x.astype(np.float16)


# Plain conversions (no blocks).
_PLAIN: dict[T, Callable[[np.ndarray], np.ndarray]] = {
    T.F32: lambda x: x.astype(np.float32, copy=False),
    T.F16: lambda x: _to_f16(x),
    T.BF16: lambda x: gq.quantize(x, T.BF16),
}

_lock = threading.Lock()
_loaded: dict[str, object] = {}


def backend_module(name: str):
    """Import a backend's module once (thread-safe); ImportError when its package is missing."""
    with _lock:
        if name not in _loaded:
            if name not in BACKEND_MODULES:
                raise UnknownQuantError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKEND_MODULES)}")
            _loaded[name] = importlib.import_module(BACKEND_MODULES[name])
        return _loaded[name]


def available_backends() -> list[str]:
    out = []
    for name in BACKEND_MODULES:
        try:
            backend_module(name)
        except ImportError:
            continue
        out.append(name)
    return out


def resolve_backend(backend: str = "auto", device: str = "auto") -> tuple[str, str]:
    """(backend, device) that `quantize` will use."""
    if device not in ("auto", "cpu", "cuda"):
        raise UnknownQuantError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    if backend == "auto":
        if device == "cuda":
            backend = "torch"
        else:
            try:
                backend_module("numba")
                backend = "numba"
            except ImportError:
                backend = "numpy"
    if backend == "torch":
        mod = backend_module("torch")
        return backend, mod.pick_device(device)
    if device == "cuda":
        raise UnknownQuantError(f"backend {backend!r} runs on the CPU only; use backend torch for cuda")
    backend_module(backend)
    return backend, "cpu"


def _check_scales(out: np.ndarray, qtype: T, tensor_name: str | None) -> None:
    blocks = out.reshape(-1, GGML_QUANT_SIZES[qtype][1])
    for off in SCALE_OFFSETS[qtype]:
        half = blocks[:, off : off + 2].copy().view(np.uint16).ravel()
        bad = np.flatnonzero((half & 0x7C00) == 0x7C00)
        if bad.size:
            raise QuantizationError(
                f"{qtype.name} block {int(bad[0])} has an Inf/NaN scale (values too large or not finite)",
                tensor=tensor_name, block=int(bad[0]),
            )


def quantize(data: np.ndarray, qtype: T, *, backend: str = "auto", device: str = "auto",
             tensor_name: str | None = None, threads: int | None = None) -> np.ndarray:
    """Quantize float rows [rows, n_per_row] to uint8 [rows, bytes_per_row], as llama.cpp does.

    Thread-safe. `threads` (numba only): None uses every core when called from the main thread
    and one thread otherwise (callers running a pool of their own keep their cores).
    F32/F16/BF16 targets are plain conversions.
    """
    qtype = T(qtype)
    data = np.asarray(data)
    if data.ndim == 1:
        data = data.reshape(1, -1)
    rows, n_per_row = data.shape[0], data.shape[-1]
    data = np.ascontiguousarray(data.reshape(rows, n_per_row), dtype=np.float32)
    if qtype in _PLAIN:
        return _PLAIN[qtype](data).view(np.uint8).reshape(rows, -1)
    if qtype not in SCALE_OFFSETS:
        raise UnknownQuantError(f"quantization to {qtype.name} is not supported", tensor=tensor_name)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if n_per_row % block_size:
        raise QuantizationError(f"row length {n_per_row} is not a multiple of the {qtype.name} block ({block_size})",
                                tensor=tensor_name)
    name, dev = resolve_backend(backend, device)
    mod = backend_module(name)
    blocks = data.reshape(-1, block_size)
    if name == "numba":
        if threads is None:
            threads = mod.default_threads() if threading.current_thread() is threading.main_thread() else 1
        out = mod.quantize_blocks(blocks, qtype, threads=threads)
    elif name == "torch":
        out = mod.quantize_blocks(blocks, qtype, device=dev)
    else:
        out = mod.quantize_blocks(blocks, qtype)
    out = out.reshape(rows, (n_per_row // block_size) * type_size)
    _check_scales(out, qtype, tensor_name)
    return out


# The function shadows the submodule of the same name on purpose: modelpack.quant.requantize(...)
from .requantize import requantize  # noqa: E402,F401
