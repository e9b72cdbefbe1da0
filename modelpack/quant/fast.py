"""Fast CPU quantizers: numba kernels byte-identical to llama.cpp's reference (no imatrix).

Rules that keep them exact: no fastmath (a fused multiply-add rounds once instead of twice),
error_model='numpy' (IEEE division by zero), every constant wrapped in np.float32 (float32 times a
Python float silently becomes float64), nearest_int through a real float32->int32 bit cast.

The K-quant searches treat 64 sub-blocks as SIMD lanes: arrays are laid out [element, lane] and
the inner loops run over lanes, so each lane still accumulates in llama.cpp's order while LLVM
vectorises across lanes; branches become selects. Kernels release the GIL; `quantize_blocks`
splits the work over threads.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGMLQuantizationType as T
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


# ---------------------------------------------------------------- lane searches


@njit(**JIT)
def _qkx2_lanes(X, W, L, Laux, S, B, n, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants on LANES sub-blocks at once. X, W: [n, LANES]; results: S[5] scale,
    S[0] min (the caller negates), L."""
    mn, mx, sum_w, sum_x, best, scale = S[0], S[1], S[2], S[3], S[4], S[5]
    iscale, sl, sl2, sxl, cur, ts, tm, dd = S[6], S[7], S[8], S[9], S[10], S[11], S[12], S[13]
    flat = B[0]
    better = B[1]
    fnmax = f32(nmax)
    zero = f32(0.0)
    for k in range(LANES):
        mn[k] = X[0, k]
        mx[k] = X[0, k]
        sum_w[k] = W[0, k]
        sum_x[k] = W[0, k] * X[0, k]
    for i in range(1, n):
        for k in range(LANES):
            x = X[i, k]
            w = W[i, k]
            mn[k] = x if x < mn[k] else mn[k]
            mx[k] = x if x > mx[k] else mx[k]
            sum_w[k] += w
            sum_x[k] += w * x
    for k in range(LANES):
        mn[k] = zero if mn[k] > zero else mn[k]
        flat[k] = mx[k] == mn[k]
        iscale[k] = fnmax / (mx[k] - mn[k])
        scale[k] = f32(1.0) / iscale[k]
        best[k] = zero
    for i in range(n):
        for k in range(LANES):
            q = min(max(nearest_int(iscale[k] * (X[i, k] - mn[k])), 0), nmax)
            L[i, k] = q
            diff = scale[k] * f32(q) + mn[k] - X[i, k]
            diff = abs(diff) if use_mad else diff * diff
            best[k] += W[i, k] * diff
    for step in range(nstep + 1):
        top = f32(rmin) + f32(rdelta) * f32(step) + fnmax
        for k in range(LANES):
            iscale[k] = top / (mx[k] - mn[k])
            sl[k] = zero
            sl2[k] = zero
            sxl[k] = zero
        for i in range(n):
            for k in range(LANES):
                q = min(max(nearest_int(iscale[k] * (X[i, k] - mn[k])), 0), nmax)
                Laux[i, k] = q
                fq = f32(q)
                wl = W[i, k] * fq
                sl[k] += wl
                sl2[k] += wl * fq
                sxl[k] += wl * X[i, k]
        for k in range(LANES):
            d = sum_w[k] * sl2[k] - sl[k] * sl[k]
            t_s = (sum_w[k] * sxl[k] - sum_x[k] * sl[k]) / d
            t_m = (sl2[k] * sum_x[k] - sl[k] * sxl[k]) / d
            pos = t_m > zero
            ts[k] = sxl[k] / sl2[k] if pos else t_s
            tm[k] = zero if pos else t_m
            dd[k] = d
            cur[k] = zero
        for i in range(n):
            for k in range(LANES):
                diff = ts[k] * f32(Laux[i, k]) + tm[k] - X[i, k]
                diff = abs(diff) if use_mad else diff * diff
                cur[k] += W[i, k] * diff
        for k in range(LANES):
            up = (dd[k] > zero) & (cur[k] < best[k]) & (not flat[k])
            better[k] = up
            best[k] = cur[k] if up else best[k]
            scale[k] = ts[k] if up else scale[k]
            mn[k] = tm[k] if up else mn[k]
        for i in range(n):
            for k in range(LANES):
                L[i, k] = Laux[i, k] if better[k] else L[i, k]
    for k in range(LANES):
        scale[k] = zero if flat[k] else scale[k]
    for i in range(n):
        for k in range(LANES):
            L[i, k] = 0 if flat[k] else L[i, k]


@njit(inline="always", **JIT)
def _qx_trial(X, Lt, iscale, sumlx, suml2, n, nmax):
    for k in range(LANES):
        sumlx[k] = f32(0.0)
        suml2[k] = f32(0.0)
    for i in range(n):
        for k in range(LANES):
            x = X[i, k]
            q = min(max(nearest_int(iscale[k] * x), -nmax), nmax - 1)
            Lt[i, k] = q + nmax
            fq = f32(q)
            w = x * x
            sumlx[k] += w * x * fq
            suml2[k] += w * fq * fq


@njit(**JIT)
def _qx_lanes(X, L, Lt, S, B, n, nmax):
    """make_qx_quants (rmse_type 1: weights x*x) on LANES sub-blocks: S[5] scale, L (+nmax)."""
    amax, mx, sumlx, suml2, best, scale, iscale = S[0], S[1], S[2], S[3], S[4], S[5], S[6]
    zero = f32(0.0)
    for k in range(LANES):
        amax[k] = zero
        mx[k] = zero
    for i in range(n):
        for k in range(LANES):
            ax = abs(X[i, k])
            up = ax > amax[k]
            amax[k] = ax if up else amax[k]
            mx[k] = X[i, k] if up else mx[k]
    for k in range(LANES):
        iscale[k] = f32(-nmax) / mx[k]
    _qx_trial(X, Lt, iscale, sumlx, suml2, n, nmax)
    for k in range(LANES):
        scale[k] = sumlx[k] / suml2[k] if suml2[k] != zero else zero
        best[k] = scale[k] * sumlx[k]
    for i in range(n):
        for k in range(LANES):
            L[i, k] = Lt[i, k]
    for step in range(-9, 10):
        if step == 0:
            continue
        for k in range(LANES):
            iscale[k] = -(f32(nmax) + f32(0.1) * f32(step)) / mx[k]
        _qx_trial(X, Lt, iscale, sumlx, suml2, n, nmax)
        for k in range(LANES):
            up = (suml2[k] > zero) & (sumlx[k] * sumlx[k] > best[k] * suml2[k])
            B[1, k] = up
            scale[k] = sumlx[k] / suml2[k] if up else scale[k]
            best[k] = scale[k] * sumlx[k] if up else best[k]
        for i in range(n):
            for k in range(LANES):
                L[i, k] = Lt[i, k] if B[1, k] else L[i, k]
    for k in range(LANES):
        z = amax[k] < f32(1e-15)
        B[0, k] = z
        scale[k] = zero if z else scale[k]
    for i in range(n):
        for k in range(LANES):
            L[i, k] = 0 if B[0, k] else L[i, k]


@njit(**JIT)
def _q3_lanes(X, L, S, B, n, nmax):
    """make_q3_quants with do_rmse on LANES sub-blocks: S[5] scale, L (+nmax)."""
    amax, mx, sumlx, suml2, iscale, scale = S[0], S[1], S[2], S[3], S[4], S[5]
    zero = f32(0.0)
    for k in range(LANES):
        amax[k] = zero
        mx[k] = zero
    for i in range(n):
        for k in range(LANES):
            ax = abs(X[i, k])
            up = ax > amax[k]
            amax[k] = ax if up else amax[k]
            mx[k] = X[i, k] if up else mx[k]
    for k in range(LANES):
        iscale[k] = f32(-nmax) / mx[k]
        sumlx[k] = zero
        suml2[k] = zero
    for i in range(n):
        for k in range(LANES):
            x = X[i, k]
            q = min(max(nearest_int(iscale[k] * x), -nmax), nmax - 1)
            L[i, k] = q
            fq = f32(q)
            w = x * x
            sumlx[k] += w * x * fq
            suml2[k] += w * fq * fq
    # A pass that changes nothing leaves the state as it was, so 5 full passes give the same
    # result as llama.cpp's early exit.
    for _ in range(5):
        for i in range(n):
            for k in range(LANES):
                x = X[i, k]
                w = x * x
                lf = f32(L[i, k])
                slx = sumlx[k] - w * x * lf
                sl2 = suml2[k] - w * lf * lf
                nl = min(max(nearest_int(x * sl2 / slx), -nmax), nmax - 1)
                nf = f32(nl)
                slx2 = slx + w * x * nf
                sl22 = sl2 + w * nf * nf
                ok = ((slx > zero) & (nl != L[i, k]) & (sl22 > zero)
                      & (slx2 * slx2 * suml2[k] > sumlx[k] * sumlx[k] * sl22))
                L[i, k] = nl if ok else L[i, k]
                sumlx[k] = slx2 if ok else sumlx[k]
                suml2[k] = sl22 if ok else suml2[k]
    for k in range(LANES):
        z = amax[k] < f32(1e-15)
        B[0, k] = z
        scale[k] = zero if (z | (suml2[k] <= zero)) else sumlx[k] / suml2[k]
    for i in range(n):
        for k in range(LANES):
            L[i, k] = 0 if B[0, k] else L[i, k] + nmax


# ---------------------------------------------------------------- super-block kernels


@njit(**JIT)
def _load(x, X, c0, nsb, sub, nsub):
    """Lane k = nsub*s + j holds sub-block j of super-block c0+s; missing super-blocks are 0."""
    for k in range(LANES):
        s = k // nsub
        j = k % nsub
        if s < nsb:
            for i in range(sub):
                X[i, k] = x[c0 + s, sub * j + i]
        else:
            for i in range(sub):
                X[i, k] = f32(0.0)


@njit(**JIT)
def _q45k(x, out, s0, s1, five):
    nmax = 31 if five else 15
    rmin = f32(-0.5) if five else f32(-1.0)
    nstep = 15 if five else 20
    X = np.zeros((32, LANES), f32)
    W = np.zeros((32, LANES), f32)
    L = np.zeros((32, LANES), np.int32)
    Laux = np.zeros((32, LANES), np.int32)
    S = np.zeros((16, LANES), f32)
    B = np.zeros((2, LANES), np.bool_)
    Lf = np.zeros(256, np.int32)
    ls = np.zeros(8, np.int32)
    lm = np.zeros(8, np.int32)
    per = LANES // 8
    for c0 in range(s0, s1, per):
        nsb = min(per, s1 - c0)
        _load(x, X, c0, nsb, 32, 8)
        for k in range(LANES):
            S[14, k] = f32(0.0)
        for i in range(32):
            for k in range(LANES):
                S[14, k] += X[i, k] * X[i, k]
        for k in range(LANES):
            S[15, k] = np.sqrt(S[14, k] / f32(32.0))
        for i in range(32):
            for k in range(LANES):
                W[i, k] = S[15, k] + abs(X[i, k])
        _qkx2_lanes(X, W, L, Laux, S, B, 32, nmax, rmin, f32(0.1), nstep, False)
        for s in range(nsb):
            b = c0 + s
            max_scale = f32(0.0)
            max_min = f32(0.0)
            for j in range(8):
                sc = S[5, 8 * s + j]
                mv = -S[0, 8 * s + j]
                if sc > max_scale:
                    max_scale = sc
                if mv > max_min:
                    max_min = mv
            inv_scale = f32(63.0) / max_scale if max_scale > f32(0.0) else f32(0.0)
            inv_min = f32(63.0) / max_min if max_min > f32(0.0) else f32(0.0)
            for j in range(8):
                ls[j] = min(63, nearest_int(inv_scale * S[5, 8 * s + j]) & 0xFF)
                lm[j] = min(63, nearest_int(inv_min * -S[0, 8 * s + j]) & 0xFF)
            for j in range(4):
                out[b, 4 + j] = ls[j] | ((ls[j + 4] >> 4) << 6)
                out[b, 8 + j] = lm[j] | ((lm[j + 4] >> 4) << 6)
                out[b, 12 + j] = (ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4)
            d = _put_f16(out, b, 0, max_scale / f32(63.0))
            dmin = _put_f16(out, b, 2, max_min / f32(63.0))
            for j in range(8):
                dj = d * f32(ls[j])
                if dj != f32(0.0):
                    dm = dmin * f32(lm[j])
                    for i in range(32):
                        Lf[32 * j + i] = min(max(nearest_int((x[b, 32 * j + i] + dm) / dj), 0), nmax)
                else:
                    for i in range(32):
                        Lf[32 * j + i] = L[i, 8 * s + j]
            if five:
                for i in range(32):
                    out[b, 16 + i] = 0
                for c in range(4):
                    for i in range(32):
                        a = Lf[64 * c + i]
                        e = Lf[64 * c + 32 + i]
                        out[b, 16 + i] |= ((a >> 4) << (2 * c)) | ((e >> 4) << (2 * c + 1))
                        out[b, 48 + 32 * c + i] = (a & 15) | ((e & 15) << 4)
            else:
                for c in range(4):
                    for i in range(32):
                        out[b, 16 + 32 * c + i] = Lf[64 * c + i] | (Lf[64 * c + 32 + i] << 4)


@njit(**JIT)
def _pack_2bit(out, b, off, Lf):
    for h in range(2):
        for i in range(32):
            q = 128 * h + i
            out[b, off + 32 * h + i] = Lf[q] | (Lf[q + 32] << 2) | (Lf[q + 64] << 4) | (Lf[q + 96] << 6)


@njit(**JIT)
def _q2k(x, out, s0, s1):
    X = np.zeros((16, LANES), f32)
    W = np.zeros((16, LANES), f32)
    L = np.zeros((16, LANES), np.int32)
    Laux = np.zeros((16, LANES), np.int32)
    S = np.zeros((16, LANES), f32)
    B = np.zeros((2, LANES), np.bool_)
    Lf = np.zeros(256, np.int32)
    sc = np.zeros(16, np.int32)
    per = LANES // 16
    q4 = f32(15.0)
    for c0 in range(s0, s1, per):
        nsb = min(per, s1 - c0)
        _load(x, X, c0, nsb, 16, 16)
        for i in range(16):
            for k in range(LANES):
                W[i, k] = abs(X[i, k])
        _qkx2_lanes(X, W, L, Laux, S, B, 16, 3, f32(-0.5), f32(0.1), 15, True)
        for s in range(nsb):
            b = c0 + s
            max_scale = f32(0.0)
            max_min = f32(0.0)
            for j in range(16):
                v = S[5, 16 * s + j]
                mv = -S[0, 16 * s + j]
                if v > max_scale:
                    max_scale = v
                if mv > max_min:
                    max_min = mv
            if max_scale > f32(0.0):
                iscale = q4 / max_scale
                for j in range(16):
                    sc[j] = nearest_int(iscale * S[5, 16 * s + j]) & 0xFF
                d = _put_f16(out, b, 80, max_scale / q4)
            else:
                for j in range(16):
                    sc[j] = 0
                d = _put_f16(out, b, 80, f32(0.0))
            if max_min > f32(0.0):
                iscale = q4 / max_min
                for j in range(16):
                    sc[j] = (sc[j] | (nearest_int(iscale * -S[0, 16 * s + j]) << 4)) & 0xFF
                dmin = _put_f16(out, b, 82, max_min / q4)
            else:
                dmin = _put_f16(out, b, 82, f32(0.0))
            for j in range(16):
                out[b, j] = sc[j]
                dj = d * f32(sc[j] & 15)
                if dj != f32(0.0):
                    dm = dmin * f32(sc[j] >> 4)
                    for i in range(16):
                        Lf[16 * j + i] = min(max(nearest_int((x[b, 16 * j + i] + dm) / dj), 0), 3)
                else:
                    for i in range(16):
                        Lf[16 * j + i] = L[i, 16 * s + j]
            _pack_2bit(out, b, 16, Lf)


@njit(**JIT)
def _q3k(x, out, s0, s1):
    X = np.zeros((16, LANES), f32)
    L = np.zeros((16, LANES), np.int32)
    S = np.zeros((16, LANES), f32)
    B = np.zeros((2, LANES), np.bool_)
    Lf = np.zeros(256, np.int32)
    sb = np.zeros(12, np.int32)
    per = LANES // 16
    for c0 in range(s0, s1, per):
        nsb = min(per, s1 - c0)
        _load(x, X, c0, nsb, 16, 16)
        _q3_lanes(X, L, S, B, 16, 4)
        for s in range(nsb):
            b = c0 + s
            max_scale = f32(0.0)
            amax = f32(0.0)
            for j in range(16):
                v = S[5, 16 * s + j]
                if abs(v) > amax:
                    amax = abs(v)
                    max_scale = v
            for j in range(12):
                sb[j] = 0
            if max_scale != f32(0.0):
                iscale = f32(-32.0) / max_scale
                for j in range(16):
                    q = nearest_int(iscale * S[5, 16 * s + j])
                    q = ((q + 128) & 0xFF) - 128  # through an int8
                    q = min(max(q, -32), 31) + 32
                    if j < 8:
                        sb[j] = q & 15
                    else:
                        sb[j - 8] |= (q & 15) << 4
                    sb[j % 4 + 8] |= (q >> 4) << (2 * (j // 4))
                d = _put_f16(out, b, 108, f32(1.0) / iscale)
            else:
                d = _put_f16(out, b, 108, f32(0.0))
            for j in range(12):
                out[b, 96 + j] = sb[j]
            for j in range(16):
                v = sb[j] & 15 if j < 8 else sb[j - 8] >> 4
                v = (v | (((sb[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
                dj = d * f32(v)
                if dj != f32(0.0):
                    for i in range(16):
                        Lf[16 * j + i] = min(max(nearest_int(x[b, 16 * j + i] / dj), -4), 3) + 4
                else:
                    for i in range(16):
                        Lf[16 * j + i] = L[i, 16 * s + j]
            for m in range(32):
                out[b, m] = 0
            for j in range(256):
                if Lf[j] > 3:
                    out[b, j % 32] |= 1 << (j // 32)
                    Lf[j] -= 4
            _pack_2bit(out, b, 32, Lf)


@njit(**JIT)
def _q6k(x, out, s0, s1):
    X = np.zeros((16, LANES), f32)
    L = np.zeros((16, LANES), np.int32)
    Lt = np.zeros((16, LANES), np.int32)
    S = np.zeros((16, LANES), f32)
    B = np.zeros((2, LANES), np.bool_)
    Lf = np.zeros(256, np.int32)
    scl = np.zeros(16, np.int32)
    per = LANES // 16
    for c0 in range(s0, s1, per):
        nsb = min(per, s1 - c0)
        _load(x, X, c0, nsb, 16, 16)
        _qx_lanes(X, L, Lt, S, B, 16, 32)
        for s in range(nsb):
            b = c0 + s
            max_scale = f32(0.0)
            max_abs = f32(0.0)
            for j in range(16):
                v = S[5, 16 * s + j]
                if abs(v) > max_abs:
                    max_abs = abs(v)
                    max_scale = v
            if max_abs < f32(1e-15):
                for i in range(210):
                    out[b, i] = 0
                continue
            iscale = f32(-128.0) / max_scale
            d = _put_f16(out, b, 208, f32(1.0) / iscale)
            for j in range(16):
                q = min(127, nearest_int(iscale * S[5, 16 * s + j]))
                q = ((q + 128) & 0xFF) - 128  # stored as int8
                scl[j] = q
                out[b, 192 + j] = q & 0xFF
            for j in range(16):
                dj = d * f32(scl[j])
                if dj != f32(0.0):
                    for i in range(16):
                        Lf[16 * j + i] = min(max(nearest_int(x[b, 16 * j + i] / dj), -32), 31) + 32
                else:
                    for i in range(16):
                        Lf[16 * j + i] = L[i, 16 * s + j]
            for h in range(2):
                for i in range(32):
                    q = 128 * h + i
                    out[b, 64 * h + i] = (Lf[q] & 15) | ((Lf[q + 64] & 15) << 4)
                    out[b, 64 * h + 32 + i] = (Lf[q + 32] & 15) | ((Lf[q + 96] & 15) << 4)
                    out[b, 128 + 32 * h + i] = ((Lf[q] >> 4) | ((Lf[q + 32] >> 4) << 2)
                                                | ((Lf[q + 64] >> 4) << 4) | ((Lf[q + 96] >> 4) << 6))


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
    from gguf import GGML_QUANT_SIZES

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
