"""Reference quantizers in numpy: the readable spec, byte-identical to llama.cpp (no imatrix).

Every function takes float32 blocks `x` of shape [n_blocks, block_size] and returns uint8
[n_blocks, type_size]. Arithmetic is float32 in llama.cpp's written order: every sum is a
sequential loop over the elements of a (sub-)block, vectorised across blocks, because a pairwise
sum (numpy's `sum`) rounds differently. Arrays are kept transposed, [element, block], so that the
per-element slices are contiguous. Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 come from the gguf package, which is
already bit-exact.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants as gq

F32 = np.float32
MAGIC = F32(12582912.0)  # 1.5 * 2**23: adding it leaves round-half-even(f) in the low mantissa bits
GROUP_MAX_EPS = F32(1e-15)
ZERO = F32(0.0)


def nearest_int(f: np.ndarray) -> np.ndarray:
    """llama.cpp's nearest_int: the bit trick, including what it does out of range."""
    v = np.asarray(f, dtype=F32) + MAGIC
    return (v.view(np.int32) & 0x7FFFFF) - 0x400000


def _clamp(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.minimum(np.maximum(v, lo), hi)


def _f16(v: np.ndarray) -> np.ndarray:
    """fp32 -> fp16 with round-to-nearest-even (GGML_FP32_TO_FP16)."""
    return np.asarray(v, dtype=F32).astype(np.float16)


def _bytes(a: np.ndarray, n: int) -> np.ndarray:
    """View a [n_blocks, k] array of any dtype as [n_blocks, n] bytes."""
    return np.ascontiguousarray(a).view(np.uint8).reshape(a.shape[0], n)


def make_qkx2_quants(xt, wt, nmax, rmin, rdelta, nstep, use_mad):
    """Scale/min search on [n, blocks] columns; returns (scale, the_min, L[n, blocks])."""
    n = xt.shape[0]
    mn = xt[0].copy()
    mx = xt[0].copy()
    sum_w = wt[0].copy()
    sum_x = sum_w * xt[0]
    for i in range(1, n):
        x = xt[i]
        mn = np.where(x < mn, x, mn)
        mx = np.where(x > mx, x, mx)
        sum_w = sum_w + wt[i]
        sum_x = sum_x + wt[i] * x
    mn = np.where(mn > ZERO, ZERO, mn)
    flat = mx == mn
    fnmax = F32(nmax)

    def error(scale, mins, lf):
        err = np.zeros_like(sum_w)
        for i in range(n):
            diff = scale * lf[i] + mins - xt[i]
            diff = np.abs(diff) if use_mad else diff * diff
            err = err + wt[i] * diff
        return err

    iscale = fnmax / (mx - mn)
    scale = F32(1.0) / iscale
    L = _clamp(nearest_int(iscale * (xt - mn)), 0, nmax)
    best = error(scale, mn, L.astype(F32))
    for step in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(step) + fnmax) / (mx - mn)
        laux = _clamp(nearest_int(iscale * (xt - mn)), 0, nmax)
        lf = laux.astype(F32)
        sum_l = np.zeros_like(sum_w)
        sum_l2 = np.zeros_like(sum_w)
        sum_xl = np.zeros_like(sum_w)
        for i in range(n):
            wl = wt[i] * lf[i]
            sum_l = sum_l + wl
            sum_l2 = sum_l2 + wl * lf[i]
            sum_xl = sum_xl + wl * xt[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = this_min > ZERO
        this_min = np.where(positive, ZERO, this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        cur = error(this_scale, this_min, lf)
        better = (D > ZERO) & (cur < best) & ~flat
        L = np.where(better, laux, L)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    L = np.where(flat, 0, L)
    scale = np.where(flat, ZERO, scale)
    return scale, -mn, L


def make_qx_quants(xt, nmax):
    """Symmetric scale search with weights x*x (rmse_type 1); returns (scale, L[n, blocks])."""
    n = xt.shape[0]
    amax, mx = _signed_absmax(xt)
    zero = amax < GROUP_MAX_EPS
    wt = xt * xt
    wx = wt * xt

    def trial(iscale):
        lv = _clamp(nearest_int(iscale * xt), -nmax, nmax - 1)
        lf = lv.astype(F32)
        sumlx = np.zeros_like(amax)
        suml2 = np.zeros_like(amax)
        for i in range(n):
            sumlx = sumlx + wx[i] * lf[i]
            suml2 = suml2 + wt[i] * lf[i] * lf[i]
        return lv, sumlx, suml2

    lv, sumlx, suml2 = trial(F32(-nmax) / mx)
    L = lv + nmax
    scale = np.where(suml2 != ZERO, sumlx / suml2, ZERO)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        lv, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
        up = (suml2 > ZERO) & (sumlx * sumlx > best * suml2)
        L = np.where(up, lv + nmax, L)
        scale = np.where(up, sumlx / suml2, scale)
        best = np.where(up, scale * sumlx, best)
    L = np.where(zero, 0, L)
    scale = np.where(zero, ZERO, scale)
    return scale, L


def make_q3_quants(xt, nmax):
    """make_q3_quants with do_rmse: coordinate descent over L, 5 passes; returns (scale, L)."""
    n = xt.shape[0]
    amax, mx = _signed_absmax(xt)
    zero = amax < GROUP_MAX_EPS
    iscale = F32(-nmax) / mx
    L = _clamp(nearest_int(iscale * xt), -nmax, nmax - 1)
    wt = xt * xt
    wx = wt * xt
    sumlx = np.zeros_like(amax)
    suml2 = np.zeros_like(amax)
    for i in range(n):
        lf = L[i].astype(F32)
        sumlx = sumlx + wx[i] * lf
        suml2 = suml2 + wt[i] * lf * lf
    for _ in range(5):
        # A pass that changes nothing leaves the state as it was, so running every block for
        # all 5 passes gives the same result as llama.cpp's early exit.
        for i in range(n):
            lf = L[i].astype(F32)
            slx = sumlx - wx[i] * lf
            sl2 = suml2 - wt[i] * lf * lf
            new_l = _clamp(nearest_int(xt[i] * sl2 / slx), -nmax, nmax - 1)
            nf = new_l.astype(F32)
            slx2 = slx + wx[i] * nf
            sl22 = sl2 + wt[i] * nf * nf
            ok = (slx > ZERO) & (new_l != L[i]) & (sl22 > ZERO) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
            L[i] = np.where(ok, new_l, L[i])
            sumlx = np.where(ok, slx2, sumlx)
            suml2 = np.where(ok, sl22, suml2)
    scale = np.where(suml2 > ZERO, sumlx / suml2, ZERO)
    L = np.where(zero, 0, L + nmax)
    scale = np.where(zero, ZERO, scale)
    return scale, L


def _running_max(v: np.ndarray) -> np.ndarray:
    """`if (s > m) m = s` over the columns of v [blocks, k], starting from 0."""
    m = np.zeros(v.shape[0], F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


def _signed_absmax(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Down the rows of v [n, blocks]: (largest |v|, its signed value; first one wins), from 0."""
    amax = np.zeros(v.shape[1], F32)
    mx = np.zeros(v.shape[1], F32)
    for i in range(v.shape[0]):
        ax = np.abs(v[i])
        up = ax > amax
        amax = np.where(up, ax, amax)
        mx = np.where(up, v[i], mx)
    return amax, mx


def _running_absmax(v: np.ndarray) -> np.ndarray:
    """The signed value of largest |v| per row of v [blocks, k] (first one wins), from 0."""
    return _signed_absmax(v.T)[1]


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """[nb, 256] values 0..3 -> 64 bytes: byte 32h+l = L[128h+l] | L[128h+32+l]<<2 | ..."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6).reshape(-1, 64)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> 12 bytes (get_scale_min_k4's layout)."""
    ls = ls.astype(np.uint8)
    lm = lm.astype(np.uint8)
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4] | (ls[:, 4:8] >> 4) << 6
    out[:, 4:8] = lm[:, 0:4] | (lm[:, 4:8] >> 4) << 6
    out[:, 8:12] = (ls[:, 4:8] & 15) | (lm[:, 4:8] & 15) << 4
    return out


def _k_scale_min(x: np.ndarray, nsub: int, nmax: int, weights, rmin, rdelta, nstep, use_mad):
    nb, qk = x.shape
    sub = qk // nsub
    xt = np.ascontiguousarray(x.reshape(nb * nsub, sub).T)
    wt = weights(xt)
    scales, mins, L = make_qkx2_quants(xt, wt, nmax, rmin, rdelta, nstep, use_mad)
    return scales.reshape(nb, nsub), mins.reshape(nb, nsub), np.ascontiguousarray(L.T).reshape(nb, nsub, sub)


def _qk_weights(xt: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K weights: sqrt(mean(x^2)) + |x| per sub-block of 32."""
    sum_x2 = np.zeros(xt.shape[1], F32)
    for i in range(xt.shape[0]):
        sum_x2 = sum_x2 + xt[i] * xt[i]
    av_x = np.sqrt(sum_x2 / F32(32.0))
    return av_x + np.abs(xt)


def _q45_k(x: np.ndarray, nmax: int, rmin: float, nstep: int):
    """The shared part of Q4_K and Q5_K: returns (d, dmin, packed scales, L[nb, 256])."""
    nb = x.shape[0]
    scales, mins, L = _k_scale_min(x, 8, nmax, _qk_weights, rmin, 0.1, nstep, False)
    max_scale = _running_max(scales)
    max_min = _running_max(mins)
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > ZERO, F32(63.0) / max_scale, ZERO)
        inv_min = np.where(max_min > ZERO, F32(63.0) / max_min, ZERO)
    ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
    lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
    d = _f16(max_scale / F32(63.0))
    dmin = _f16(max_min / F32(63.0))
    dj = d.astype(F32)[:, None] * ls.astype(F32)
    dm = dmin.astype(F32)[:, None] * lm.astype(F32)
    xs = x.reshape(nb, 8, 32)
    requant = _clamp(nearest_int((xs + dm[..., None]) / dj[..., None]), 0, nmax)
    L = np.where(dj[..., None] != ZERO, requant, L).reshape(nb, 256)
    return d, dmin, _pack_scales_k4(ls, lm), L


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, sc, L = _q45_k(x, 15, -1.0, 20)
    q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
    qs = (q[:, :, 0] | q[:, :, 1] << 4).reshape(-1, 128)
    return np.concatenate([_bytes(d[:, None], 2), _bytes(dmin[:, None], 2), sc, qs], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, sc, L = _q45_k(x, 31, -0.5, 15)
    q = L.reshape(-1, 4, 2, 32).astype(np.uint8)
    qs = ((q[:, :, 0] & 15) | (q[:, :, 1] & 15) << 4).reshape(-1, 128)
    hi = q >> 4  # [nb, chunk, half, 32]: bit 2*chunk+half of qh[l]
    qh = np.zeros((q.shape[0], 32), np.uint8)
    for c in range(4):
        qh |= hi[:, c, 0] << (2 * c) | hi[:, c, 1] << (2 * c + 1)
    return np.concatenate([_bytes(d[:, None], 2), _bytes(dmin[:, None], 2), sc, qh, qs], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xt = np.ascontiguousarray(x.reshape(nb * 16, 16).T)
    scales, L = make_qx_quants(xt, 32)
    scales = scales.reshape(nb, 16)
    L = np.ascontiguousarray(L.T).reshape(nb, 16, 16)
    max_scale = _running_absmax(scales)
    zero_block = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F32(-128.0) / max_scale
        d = _f16(F32(1.0) / iscale)
    sc = np.minimum(nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
    dj = d.astype(F32)[:, None] * sc.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = _clamp(nearest_int(x.reshape(nb, 16, 16) / dj[..., None]), -32, 31) + 32
    L = np.where(dj[..., None] != ZERO, requant, L).reshape(nb, 2, 4, 32).astype(np.uint8)
    lo = L & 15
    ql = np.stack([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4], axis=2).reshape(nb, 128)
    hi = L >> 4
    qh = (hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6).reshape(nb, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), _bytes(d[:, None], 2)], axis=1)
    out[zero_block] = 0
    return out


def quantize_q2_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    scales, mins, L = _k_scale_min(x, 16, 3, np.abs, -0.5, 0.1, 15, True)
    max_scale = _running_max(scales)
    max_min = _running_max(mins)
    q4scale = F32(15.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.where(max_scale[:, None] > ZERO, nearest_int((q4scale / max_scale)[:, None] * scales), 0)
        lm = np.where(max_min[:, None] > ZERO, nearest_int((q4scale / max_min)[:, None] * mins), 0)
    sc = ((ls & 0xFF) | (lm << 4) & 0xFF).astype(np.uint8)
    d = _f16(np.where(max_scale > ZERO, max_scale / q4scale, ZERO))
    dmin = _f16(np.where(max_min > ZERO, max_min / q4scale, ZERO))
    dj = d.astype(F32)[:, None] * (sc & 15).astype(F32)
    dm = dmin.astype(F32)[:, None] * (sc >> 4).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = _clamp(nearest_int((x.reshape(nb, 16, 16) + dm[..., None]) / dj[..., None]), 0, 3)
    L = np.where(dj[..., None] != ZERO, requant, L).reshape(nb, 256)
    return np.concatenate([sc, _pack_2bit(L), _bytes(d[:, None], 2), _bytes(dmin[:, None], 2)], axis=1)


def quantize_q3_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xt = np.ascontiguousarray(x.reshape(nb * 16, 16).T)
    scales, L = make_q3_quants(xt, 4)
    scales = scales.reshape(nb, 16)
    L = np.ascontiguousarray(L.T).reshape(nb, 16, 16)
    max_scale = _running_absmax(scales)
    has_scale = max_scale != ZERO
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = F32(-32.0) / max_scale
        # nearest_int goes through an int8 before the clamp
        l6 = _clamp(nearest_int(iscale[:, None] * scales).astype(np.int8), -32, 31) + 32
        d = _f16(np.where(has_scale, F32(1.0) / iscale, ZERO))
    l6 = np.where(has_scale[:, None], l6, 0).astype(np.uint8)
    sc = np.zeros((nb, 12), np.uint8)
    sc[:, 0:8] = (l6[:, 0:8] & 15) | (l6[:, 8:16] & 15) << 4
    hi = (l6 >> 4).reshape(nb, 4, 4)  # [j//4, j%4]
    sc[:, 8:12] = hi[:, 0] | hi[:, 1] << 2 | hi[:, 2] << 4 | hi[:, 3] << 6
    # what the dequantizer reads back: the stored 6-bit value minus 32 (0 where all scales are 0)
    stored = np.where(has_scale[:, None], l6.astype(np.int32), 0) - 32
    dj = d.astype(F32)[:, None] * stored.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = _clamp(nearest_int(x.reshape(nb, 16, 16) / dj[..., None]), -4, 3) + 4
    L = np.where(dj[..., None] != ZERO, requant, L).reshape(nb, 256)
    high = (L > 3).reshape(nb, 8, 32)  # element 32*b + m sets bit b of hmask[m]
    hmask = np.zeros((nb, 32), np.uint8)
    for b in range(8):
        hmask |= high[:, b].astype(np.uint8) << b
    L = np.where(L > 3, L - 4, L)
    return np.concatenate([hmask, _pack_2bit(L), sc, _bytes(d[:, None], 2)], axis=1)


def _gguf_blocks(qtype: T):
    def run(x: np.ndarray) -> np.ndarray:
        return gq.quantize(x, qtype).reshape(x.shape[0], -1)

    return run


# qtype -> function(blocks [n_blocks, block_size] float32) -> uint8 [n_blocks, type_size]
KERNELS = {
    T.Q8_0: _gguf_blocks(T.Q8_0),
    T.Q4_0: _gguf_blocks(T.Q4_0),
    T.Q4_1: _gguf_blocks(T.Q4_1),
    T.Q5_0: _gguf_blocks(T.Q5_0),
    T.Q5_1: _gguf_blocks(T.Q5_1),
    T.Q2_K: quantize_q2_k,
    T.Q3_K: quantize_q3_k,
    T.Q4_K: quantize_q4_k,
    T.Q5_K: quantize_q5_k,
    T.Q6_K: quantize_q6_k,
}


def quantize_blocks(x: np.ndarray, qtype: T, chunk: int = 4096) -> np.ndarray:
    """Quantize [n_blocks, block_size] float32 in chunks (bounded temporaries)."""
    kernel = KERNELS[qtype]
    x = np.ascontiguousarray(x, dtype=F32)
    with np.errstate(all="ignore"):  # inf/nan in discarded lanes are expected, as in C
        parts = [kernel(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
    return np.concatenate(parts, axis=0) if len(parts) != 1 else parts[0]
