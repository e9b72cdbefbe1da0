"""Torch quantizers (CUDA when present): the numpy reference's algorithm in eager torch ops.

Exactness rules: every op is a separate eager float32 elementwise op (each rounds once; no fused
multiply-add, no torch.compile), every sum is a sequential loop over a (sub-)block's elements
vectorised across blocks, sqrt is taken in float64 and rounded back (torch's float32 sqrt is not
correctly rounded on every CPU), and nearest_int is llama.cpp's bit trick through an int32 view.
"""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

F32 = torch.float32
I32 = torch.int32


def pick_device(device: str = "auto") -> str:
    if device == "cuda" and not torch.cuda.is_available():
        from modelpack.errors import UnknownQuantError

        raise UnknownQuantError("device cuda requested but torch sees no CUDA device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _c(v: float, like: torch.Tensor) -> torch.Tensor:
    """A float32 scalar constant on the right device."""
    return torch.tensor(v, dtype=F32, device=like.device)


def nearest_int(f: torch.Tensor) -> torch.Tensor:
    v = f.to(F32) + _c(12582912.0, f)
    return (v.view(I32) & 0x7FFFFF) - 0x400000


def _clamp(v, lo, hi):
    return torch.clamp(v, lo, hi)


def _f16(v: torch.Tensor) -> torch.Tensor:
    return v.to(F32).to(torch.float16)


def _bytes(h: torch.Tensor) -> torch.Tensor:
    """[N] float16 -> [N, 2] uint8."""
    return h.contiguous().view(torch.uint8).reshape(-1, 2)


def _running_max(v):
    m = torch.zeros(v.shape[0], dtype=F32, device=v.device)
    for j in range(v.shape[1]):
        m = torch.where(v[:, j] > m, v[:, j], m)
    return m


def _running_absmax(v):
    a = torch.zeros(v.shape[0], dtype=F32, device=v.device)
    m = torch.zeros_like(a)
    for j in range(v.shape[1]):
        up = v[:, j].abs() > a
        a = torch.where(up, v[:, j].abs(), a)
        m = torch.where(up, v[:, j], m)
    return m


def make_qkx2_quants(xt, wt, nmax, rmin, rdelta, nstep, use_mad):
    n = xt.shape[0]
    zero = _c(0.0, xt)
    mn, mx = xt[0].clone(), xt[0].clone()
    sum_w = wt[0].clone()
    sum_x = sum_w * xt[0]
    for i in range(1, n):
        mn = torch.where(xt[i] < mn, xt[i], mn)
        mx = torch.where(xt[i] > mx, xt[i], mx)
        sum_w = sum_w + wt[i]
        sum_x = sum_x + wt[i] * xt[i]
    mn = torch.where(mn > zero, zero, mn)
    flat = mx == mn

    def error(scale, mins, lf):
        err = torch.zeros_like(sum_w)
        for i in range(n):
            diff = scale * lf[i] + mins - xt[i]
            diff = diff.abs() if use_mad else diff * diff
            err = err + wt[i] * diff
        return err

    fnmax = _c(nmax, xt)
    iscale = fnmax / (mx - mn)
    scale = _c(1.0, xt) / iscale
    L = _clamp(nearest_int(iscale * (xt - mn)), 0, nmax)
    best = error(scale, mn, L.to(F32))
    for step in range(nstep + 1):
        iscale = (_c(rmin, xt) + _c(rdelta, xt) * _c(step, xt) + fnmax) / (mx - mn)
        laux = _clamp(nearest_int(iscale * (xt - mn)), 0, nmax)
        lf = laux.to(F32)
        sum_l = torch.zeros_like(sum_w)
        sum_l2 = torch.zeros_like(sum_w)
        sum_xl = torch.zeros_like(sum_w)
        for i in range(n):
            wl = wt[i] * lf[i]
            sum_l = sum_l + wl
            sum_l2 = sum_l2 + wl * lf[i]
            sum_xl = sum_xl + wl * xt[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = this_min > zero
        this_min = torch.where(positive, zero, this_min)
        this_scale = torch.where(positive, sum_xl / sum_l2, this_scale)
        cur = error(this_scale, this_min, lf)
        better = (D > zero) & (cur < best) & ~flat
        L = torch.where(better, laux, L)
        best = torch.where(better, cur, best)
        scale = torch.where(better, this_scale, scale)
        mn = torch.where(better, this_min, mn)
    L = torch.where(flat, torch.zeros_like(L), L)
    scale = torch.where(flat, zero, scale)
    return scale, -mn, L


def _absmax_signed(xt):
    amax = torch.zeros(xt.shape[1], dtype=F32, device=xt.device)
    mx = torch.zeros_like(amax)
    for i in range(xt.shape[0]):
        up = xt[i].abs() > amax
        amax = torch.where(up, xt[i].abs(), amax)
        mx = torch.where(up, xt[i], mx)
    return amax, mx


def make_qx_quants(xt, nmax):
    n = xt.shape[0]
    zero = _c(0.0, xt)
    amax, mx = _absmax_signed(xt)
    wt = xt * xt
    wx = wt * xt

    def trial(iscale):
        lv = _clamp(nearest_int(iscale * xt), -nmax, nmax - 1)
        lf = lv.to(F32)
        sumlx = torch.zeros_like(amax)
        suml2 = torch.zeros_like(amax)
        for i in range(n):
            sumlx = sumlx + wx[i] * lf[i]
            suml2 = suml2 + wt[i] * lf[i] * lf[i]
        return lv, sumlx, suml2

    lv, sumlx, suml2 = trial(_c(-nmax, xt) / mx)
    L = lv + nmax
    scale = torch.where(suml2 != zero, sumlx / suml2, zero)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        lv, sumlx, suml2 = trial(-(_c(nmax, xt) + _c(0.1, xt) * _c(step, xt)) / mx)
        up = (suml2 > zero) & (sumlx * sumlx > best * suml2)
        L = torch.where(up, lv + nmax, L)
        scale = torch.where(up, sumlx / suml2, scale)
        best = torch.where(up, scale * sumlx, best)
    zero_block = amax < _c(1e-15, xt)
    return torch.where(zero_block, zero, scale), torch.where(zero_block, torch.zeros_like(L), L)


def make_q3_quants(xt, nmax):
    n = xt.shape[0]
    zero = _c(0.0, xt)
    amax, mx = _absmax_signed(xt)
    L = _clamp(nearest_int((_c(-nmax, xt) / mx) * xt), -nmax, nmax - 1)
    wt = xt * xt
    wx = wt * xt
    sumlx = torch.zeros_like(amax)
    suml2 = torch.zeros_like(amax)
    for i in range(n):
        lf = L[i].to(F32)
        sumlx = sumlx + wx[i] * lf
        suml2 = suml2 + wt[i] * lf * lf
    for _ in range(5):  # a pass without changes leaves the state as it was (= llama.cpp's early exit)
        for i in range(n):
            lf = L[i].to(F32)
            slx = sumlx - wx[i] * lf
            sl2 = suml2 - wt[i] * lf * lf
            new_l = _clamp(nearest_int(xt[i] * sl2 / slx), -nmax, nmax - 1)
            nf = new_l.to(F32)
            slx2 = slx + wx[i] * nf
            sl22 = sl2 + wt[i] * nf * nf
            ok = (slx > zero) & (new_l != L[i]) & (sl22 > zero) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
            L[i] = torch.where(ok, new_l, L[i])
            sumlx = torch.where(ok, slx2, sumlx)
            suml2 = torch.where(ok, sl22, suml2)
    zero_block = amax < _c(1e-15, xt)
    scale = torch.where(suml2 > zero, sumlx / suml2, zero)
    return torch.where(zero_block, zero, scale), torch.where(zero_block, torch.zeros_like(L), L + nmax)


def _subblocks(x, sub):
    nb = x.shape[0]
    return x.reshape(nb * (256 // sub), sub).t().contiguous()


def _lanes_to_blocks(L, nb, nsub, sub):
    return L.t().contiguous().reshape(nb, nsub, sub)


def _pack_2bit(L):
    q = L.reshape(-1, 2, 4, 32).to(torch.uint8)
    return (q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6).reshape(-1, 64)


def _pack_scales_k4(ls, lm):
    ls, lm = ls.to(torch.uint8), lm.to(torch.uint8)
    return torch.cat([ls[:, 0:4] | (ls[:, 4:8] >> 4) << 6, lm[:, 0:4] | (lm[:, 4:8] >> 4) << 6,
                      (ls[:, 4:8] & 15) | (lm[:, 4:8] & 15) << 4], dim=1)


def _q45_k(x, nmax, rmin, nstep):
    nb = x.shape[0]
    xt = _subblocks(x, 32)
    sum_x2 = torch.zeros(xt.shape[1], dtype=F32, device=x.device)
    for i in range(32):
        sum_x2 = sum_x2 + xt[i] * xt[i]
    av_x = torch.sqrt((sum_x2 / _c(32.0, x)).double()).to(F32)
    scales, mins, L = make_qkx2_quants(xt, av_x + xt.abs(), nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    L = _lanes_to_blocks(L, nb, 8, 32)
    max_scale, max_min = _running_max(scales), _running_max(mins)
    zero = _c(0.0, x)
    inv_scale = torch.where(max_scale > zero, _c(63.0, x) / max_scale, zero)
    inv_min = torch.where(max_min > zero, _c(63.0, x) / max_min, zero)
    ls = torch.clamp(nearest_int(inv_scale[:, None] * scales) & 0xFF, max=63)
    lm = torch.clamp(nearest_int(inv_min[:, None] * mins) & 0xFF, max=63)
    d, dmin = _f16(max_scale / _c(63.0, x)), _f16(max_min / _c(63.0, x))
    dj = d.to(F32)[:, None] * ls.to(F32)
    dm = dmin.to(F32)[:, None] * lm.to(F32)
    requant = _clamp(nearest_int((x.reshape(nb, 8, 32) + dm[..., None]) / dj[..., None]), 0, nmax)
    L = torch.where(dj[..., None] != zero, requant, L).reshape(nb, 256)
    return d, dmin, _pack_scales_k4(ls, lm), L


def quantize_q4_k(x):
    d, dmin, sc, L = _q45_k(x, 15, -1.0, 20)
    q = L.reshape(-1, 4, 2, 32).to(torch.uint8)
    qs = (q[:, :, 0] | q[:, :, 1] << 4).reshape(-1, 128)
    return torch.cat([_bytes(d), _bytes(dmin), sc, qs], dim=1)


def quantize_q5_k(x):
    d, dmin, sc, L = _q45_k(x, 31, -0.5, 15)
    q = L.reshape(-1, 4, 2, 32).to(torch.uint8)
    qs = ((q[:, :, 0] & 15) | (q[:, :, 1] & 15) << 4).reshape(-1, 128)
    hi = q >> 4
    qh = torch.zeros((q.shape[0], 32), dtype=torch.uint8, device=x.device)
    for c in range(4):
        qh = qh | hi[:, c, 0] << (2 * c) | hi[:, c, 1] << (2 * c + 1)
    return torch.cat([_bytes(d), _bytes(dmin), sc, qh, qs], dim=1)


def quantize_q6_k(x):
    nb = x.shape[0]
    zero = _c(0.0, x)
    scales, L = make_qx_quants(_subblocks(x, 16), 32)
    scales, L = scales.reshape(nb, 16), _lanes_to_blocks(L, nb, 16, 16)
    max_scale = _running_absmax(scales)
    zero_block = max_scale.abs() < _c(1e-15, x)
    iscale = _c(-128.0, x) / max_scale
    d = _f16(_c(1.0, x) / iscale)
    sc = torch.clamp(nearest_int(iscale[:, None] * scales), max=127).to(torch.int8)
    dj = d.to(F32)[:, None] * sc.to(F32)
    requant = _clamp(nearest_int(x.reshape(nb, 16, 16) / dj[..., None]), -32, 31) + 32
    L = torch.where(dj[..., None] != zero, requant, L).reshape(nb, 2, 4, 32).to(torch.uint8)
    lo, hi = L & 15, L >> 4
    ql = torch.stack([lo[:, :, 0] | lo[:, :, 2] << 4, lo[:, :, 1] | lo[:, :, 3] << 4], dim=2).reshape(nb, 128)
    qh = (hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6).reshape(nb, 64)
    out = torch.cat([ql, qh, sc.view(torch.uint8), _bytes(d)], dim=1)
    out[zero_block] = 0
    return out


def quantize_q2_k(x):
    nb = x.shape[0]
    zero = _c(0.0, x)
    xt = _subblocks(x, 16)
    scales, mins, L = make_qkx2_quants(xt, xt.abs(), 3, -0.5, 0.1, 15, True)
    scales, mins, L = scales.reshape(nb, 16), mins.reshape(nb, 16), _lanes_to_blocks(L, nb, 16, 16)
    max_scale, max_min = _running_max(scales), _running_max(mins)
    q4 = _c(15.0, x)
    ls = torch.where(max_scale[:, None] > zero, nearest_int((q4 / max_scale)[:, None] * scales), 0)
    lm = torch.where(max_min[:, None] > zero, nearest_int((q4 / max_min)[:, None] * mins), 0)
    sc = ((ls & 0xFF) | (lm << 4) & 0xFF).to(torch.uint8)
    d = _f16(torch.where(max_scale > zero, max_scale / q4, zero))
    dmin = _f16(torch.where(max_min > zero, max_min / q4, zero))
    dj = d.to(F32)[:, None] * (sc & 15).to(F32)
    dm = dmin.to(F32)[:, None] * (sc >> 4).to(F32)
    requant = _clamp(nearest_int((x.reshape(nb, 16, 16) + dm[..., None]) / dj[..., None]), 0, 3)
    L = torch.where(dj[..., None] != zero, requant, L).reshape(nb, 256)
    return torch.cat([sc, _pack_2bit(L), _bytes(d), _bytes(dmin)], dim=1)


def quantize_q3_k(x):
    nb = x.shape[0]
    zero = _c(0.0, x)
    scales, L = make_q3_quants(_subblocks(x, 16), 4)
    scales, L = scales.reshape(nb, 16), _lanes_to_blocks(L, nb, 16, 16)
    max_scale = _running_absmax(scales)
    has = max_scale != zero
    iscale = _c(-32.0, x) / max_scale
    l6 = _clamp(((nearest_int(iscale[:, None] * scales) + 128) & 0xFF) - 128, -32, 31) + 32  # via int8
    l6 = torch.where(has[:, None], l6, 0).to(torch.uint8)
    d = _f16(torch.where(has, _c(1.0, x) / iscale, zero))
    hi = (l6 >> 4).reshape(nb, 4, 4)
    sc = torch.cat([(l6[:, 0:8] & 15) | (l6[:, 8:16] & 15) << 4,
                    hi[:, 0] | hi[:, 1] << 2 | hi[:, 2] << 4 | hi[:, 3] << 6], dim=1)
    stored = torch.where(has[:, None], l6.to(I32), 0) - 32
    dj = d.to(F32)[:, None] * stored.to(F32)
    requant = _clamp(nearest_int(x.reshape(nb, 16, 16) / dj[..., None]), -4, 3) + 4
    L = torch.where(dj[..., None] != zero, requant, L).reshape(nb, 256)
    high = (L > 3).reshape(nb, 8, 32).to(torch.uint8)
    hmask = torch.zeros((nb, 32), dtype=torch.uint8, device=x.device)
    for b in range(8):
        hmask = hmask | high[:, b] << b
    L = torch.where(L > 3, L - 4, L)
    return torch.cat([hmask, _pack_2bit(L), sc, _bytes(d)], dim=1)


def _roundf(v):
    """C roundf (half away from zero), exactly: trunc plus the exact fractional part."""
    t = torch.trunc(v)
    r = v - t
    one = _c(1.0, v)
    return torch.where(r >= _c(0.5, v), t + one, torch.where(r <= _c(-0.5, v), t - one, t))


def quantize_q8_0(x):
    amax = torch.zeros(x.shape[0], dtype=F32, device=x.device)
    for j in range(32):
        a = x[:, j].abs()
        amax = torch.where(amax > a, amax, a)
    d = amax / _c(127.0, x)
    idv = torch.where(d != 0, _c(1.0, x) / d, _c(0.0, x))
    q = _roundf(x * idv[:, None]).to(I32).to(torch.int8).view(torch.uint8)
    return torch.cat([_bytes(_f16(d)), q], dim=1)


def _sym32(x, five):
    """Q4_0 / Q5_0: scale from the signed value of largest magnitude (first wins)."""
    amax = torch.zeros(x.shape[0], dtype=F32, device=x.device)
    mx = torch.zeros_like(amax)
    for j in range(32):
        up = amax < x[:, j].abs()
        amax = torch.where(up, x[:, j].abs(), amax)
        mx = torch.where(up, x[:, j], mx)
    d = mx / _c(-16.0 if five else -8.0, x)
    idv = torch.where(d != 0, _c(1.0, x) / d, _c(0.0, x))
    q = (x * idv[:, None] + _c(16.5 if five else 8.5, x)).to(I32).to(torch.int8).to(I32)
    return d, torch.clamp(q, max=31 if five else 15), None


def _asym32(x, five):
    """Q4_1 / Q5_1: min and max, d = (max - min) / levels."""
    mn = torch.full((x.shape[0],), float(np.finfo(np.float32).max), dtype=F32, device=x.device)
    mx = -mn
    for j in range(32):
        mn = torch.where(x[:, j] < mn, x[:, j], mn)
        mx = torch.where(x[:, j] > mx, x[:, j], mx)
    d = (mx - mn) / _c(31.0 if five else 15.0, x)
    idv = torch.where(d != 0, _c(1.0, x) / d, _c(0.0, x))
    v = ((x - mn[:, None]) * idv[:, None] + _c(0.5, x)).to(I32)
    q = (v & 0xFF) if five else torch.clamp(v.to(torch.int8).to(I32), max=15)
    return d, q, mn


def _pack32(d, q, m, five):
    parts = [_bytes(_f16(d))]
    if m is not None:
        parts.append(_bytes(_f16(m)))
    if five:
        bits = ((q >> 4) & 1).to(torch.int64)
        qh = (bits << torch.arange(32, device=q.device)).sum(dim=1)  # integer sum: exact
        parts.append(torch.stack([(qh >> (8 * k)) & 0xFF for k in range(4)], dim=1).to(torch.uint8))
    parts.append(((q[:, :16] & 15) | (q[:, 16:] & 15) << 4).to(torch.uint8))
    return torch.cat(parts, dim=1)


KERNELS = {
    T.Q8_0: quantize_q8_0,
    T.Q4_0: lambda x: _pack32(*_sym32(x, False), False),
    T.Q5_0: lambda x: _pack32(*_sym32(x, True), True),
    T.Q4_1: lambda x: _pack32(*_asym32(x, False), False),
    T.Q5_1: lambda x: _pack32(*_asym32(x, True), True),
    T.Q2_K: quantize_q2_k,
    T.Q3_K: quantize_q3_k,
    T.Q4_K: quantize_q4_k,
    T.Q5_K: quantize_q5_k,
    T.Q6_K: quantize_q6_k,
}


@torch.inference_mode()
def quantize_blocks(x: np.ndarray, qtype: T, *, device: str = "cpu", chunk: int = 1 << 15) -> np.ndarray:
    """[n_blocks, block_size] float32 -> [n_blocks, type_size] uint8, computed on `device`."""
    kernel = KERNELS[qtype]
    out = np.empty((x.shape[0], GGML_QUANT_SIZES[qtype][1]), np.uint8)
    for i in range(0, x.shape[0], chunk):
        xb = torch.from_numpy(np.array(x[i : i + chunk], dtype=np.float32)).to(device)
        out[i : i + chunk] = kernel(xb).cpu().numpy()
    return out
