"""numba building blocks shared by the fast kernels: exact float32 primitives.

Rules that keep the kernels byte-identical to llama.cpp: no fastmath (a fused multiply-add
rounds once instead of twice), error_model='numpy' (IEEE division by zero), every constant
wrapped in np.float32 (float32 times a Python float silently becomes float64), and nearest_int
through a real float32->int32 bit cast.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False)
LANES = 64
f32 = np.float32


@intrinsic
def _f32_bits(typingctx, x):
    """float32 -> int32 with the same bits."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, x):
    """int32 -> float32 with the same bits."""
    if x != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", **JIT)
def nearest_int(v):
    b = _f32_bits(v + f32(12582912.0))
    return (b & 0x7FFFFF) - 0x400000


@njit(inline="always", **JIT)
def fp16_bits(f):
    """float32 -> IEEE half bits, round to nearest even (GGML_FP32_TO_FP16)."""
    x = np.int64(_f32_bits(f)) & 0xFFFFFFFF
    sign = (x >> 16) & 0x8000
    ax = x & 0x7FFFFFFF
    if ax > 0x7F800000:
        return sign | 0x7E00
    if ax >= 0x47800000:
        return sign | 0x7C00
    if ax >= 0x38800000:
        h = (ax >> 13) - (112 << 10)
        rem = ax & 0x1FFF
        if rem > 0x1000 or (rem == 0x1000 and (h & 1) == 1):
            h += 1
        return sign | h
    if ax < 0x33000000:
        return sign
    e = ax >> 23
    m = (ax & 0x7FFFFF) | 0x800000
    shift = 126 - e
    h = m >> shift
    rem = m & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    if rem > half or (rem == half and (h & 1) == 1):
        h += 1
    return sign | h


@njit(inline="always", **JIT)
def fp16_value(h):
    """IEEE half bits -> float32."""
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = f32(m) * f32(5.9604645e-08)  # m * 2^-24, exact
        return -v if sign else v
    if e == 31:
        bits = sign | 0x7F800000 | (m << 13)
    else:
        bits = sign | ((e + 112) << 23) | (m << 13)
    return _bits_f32(np.int32(np.uint32(bits)))


@njit(inline="always", **JIT)
def _put_f16(out, b, off, v):
    h = fp16_bits(v)
    out[b, off] = h & 0xFF
    out[b, off + 1] = (h >> 8) & 0xFF
    return fp16_value(h)


@njit(inline="always", **JIT)
def _roundf(v):
    """C roundf: half away from zero."""
    t = np.trunc(v)
    r = v - t
    if r >= f32(0.5):
        t += f32(1.0)
    elif r <= f32(-0.5):
        t -= f32(1.0)
    return t
