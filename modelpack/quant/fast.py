"""Fast CPU quantizers: numba kernels byte-identical to llama.cpp's reference (no imatrix).

The 32-element block types live here; the K-quants (lane-vectorised scale searches) in
fast_kquants.py; the exact float32 primitives in numba_ops.py. Kernels release the GIL;
`quantize_blocks` splits a tensor's blocks over threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from numba import njit

from .fast_kquants import _q2k, _q3k, _q6k, _q45k
from .numba_ops import JIT, _put_f16, _roundf, f32


# ---------------------------------------------------------------- 32-blocks (Q8_0, Q4_0, ...)


@njit(**JIT)
def _q8_0(x, out, b0, b1):
    for b in range(b0, b1):
        amax = f32(0.0)
        for j in range(32):
            a = abs(x[b, j])
            amax = amax if amax > a else a
        d = amax / f32(127.0)
        idv = f32(1.0) / d if d != f32(0.0) else f32(0.0)
        _put_f16(out, b, 0, d)
        for j in range(32):
            out[b, 2 + j] = np.uint8(np.int8(np.int32(_roundf(x[b, j] * idv))))


@njit(**JIT)
def _q4_0_q5_0(x, out, b0, b1, five):
    nmax = f32(-16.0) if five else f32(-8.0)
    bias = f32(16.5) if five else f32(8.5)
    top = 31 if five else 15
    for b in range(b0, b1):
        amax = f32(0.0)
        mx = f32(0.0)
        for j in range(32):
            v = x[b, j]
            if amax < abs(v):
                amax = abs(v)
                mx = v
        d = mx / nmax
        idv = f32(1.0) / d if d != f32(0.0) else f32(0.0)
        _put_f16(out, b, 0, d)
        qh = np.uint32(0)
        q0 = 6 if five else 2
        for j in range(16):
            a = min(top, np.int32(np.int8(np.int32(x[b, j] * idv + bias))))
            c = min(top, np.int32(np.int8(np.int32(x[b, j + 16] * idv + bias))))
            out[b, q0 + j] = (a & 15) | ((c & 15) << 4)
            qh |= np.uint32((a >> 4) & 1) << j
            qh |= np.uint32((c >> 4) & 1) << (j + 16)
        if five:
            for k in range(4):
                out[b, 2 + k] = (qh >> (8 * k)) & 0xFF


@njit(**JIT)
def _q4_1_q5_1(x, out, b0, b1, five):
    levels = f32(31.0) if five else f32(15.0)
    for b in range(b0, b1):
        mn = f32(3.4028235e38)
        mx = f32(-3.4028235e38)
        for j in range(32):
            v = x[b, j]
            if v < mn:
                mn = v
            if v > mx:
                mx = v
        d = (mx - mn) / levels
        idv = f32(1.0) / d if d != f32(0.0) else f32(0.0)
        _put_f16(out, b, 0, d)
        _put_f16(out, b, 2, mn)
        qh = np.uint32(0)
        q0 = 8 if five else 4
        for j in range(16):
            if five:
                a = np.int32(np.uint8(np.int32((x[b, j] - mn) * idv + f32(0.5))))
                c = np.int32(np.uint8(np.int32((x[b, j + 16] - mn) * idv + f32(0.5))))
            else:
                a = min(15, np.int32(np.int8(np.int32((x[b, j] - mn) * idv + f32(0.5)))))
                c = min(15, np.int32(np.int8(np.int32((x[b, j + 16] - mn) * idv + f32(0.5)))))
            out[b, q0 + j] = (a & 15) | ((c & 15) << 4)
            qh |= np.uint32((a >> 4) & 1) << j
            qh |= np.uint32((c >> 4) & 1) << (j + 16)
        if five:
            for k in range(4):
                out[b, 4 + k] = (qh >> (8 * k)) & 0xFF


# ---------------------------------------------------------------- dispatch

# qtype -> (kernel(x, out, start, stop, *extra), extra args, units per split alignment)
KERNELS = {
    T.Q8_0: (_q8_0, (), 64),
    T.Q4_0: (_q4_0_q5_0, (False,), 64),
    T.Q5_0: (_q4_0_q5_0, (True,), 64),
    T.Q4_1: (_q4_1_q5_1, (False,), 64),
    T.Q5_1: (_q4_1_q5_1, (True,), 64),
    T.Q2_K: (_q2k, (), 4),
    T.Q3_K: (_q3k, (), 4),
    T.Q4_K: (_q45k, (False,), 8),
    T.Q5_K: (_q45k, (True,), 8),
    T.Q6_K: (_q6k, (), 4),
}

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, default_threads()), thread_name_prefix="modelpack-quant")
        return _pool


def quantize_blocks(x: np.ndarray, qtype: T, *, threads: int = 1) -> np.ndarray:
    """[n_blocks, block_size] float32 -> [n_blocks, type_size] uint8, split over `threads`."""
    kernel, extra, align = KERNELS[qtype]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.flags.writeable:  # one compiled signature: numba types read-only arrays separately
        x = x.copy()
    n = x.shape[0]
    out = np.empty((n, GGML_QUANT_SIZES[qtype][1]), np.uint8)
    parts = max(1, min(int(threads), n // align))
    if parts <= 1:
        kernel(x, out, 0, n, *extra)
        return out
    step = -(-n // parts)
    step = -(-step // align) * align
    bounds = [(a, min(n, a + step)) for a in range(0, n, step)]
    futures = [_executor().submit(kernel, x, out, a, b, *extra) for a, b in bounds[1:]]
    kernel(x, out, bounds[0][0], bounds[0][1], *extra)  # this thread takes a share too
    for f in futures:
        f.result()
    return out
