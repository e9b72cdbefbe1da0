"""Quantization kernels: every backend against llama.cpp's golden vectors, and the quantize() API."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from conftest import DATA
from modelpack.errors import QuantizationError, UnknownQuantError
from modelpack.quant import QUANT_TYPES, backend_module, quantize, resolve_backend

QUANT = DATA / "quant"
MANIFEST = json.loads((QUANT / "manifest.json").read_text())
CASES = sorted(MANIFEST["cases"])
TYPES = [t.name for t in QUANT_TYPES]


def golden(case: str, tname: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(QUANT / f"{case}.npy")
    want = np.frombuffer((QUANT / f"{case}.{tname}.bin").read_bytes(), np.uint8).reshape(x.shape[0], -1)
    return x, want


def first_bad_block(got: np.ndarray, want: np.ndarray, qtype: T) -> int | None:
    size = GGML_QUANT_SIZES[qtype][1]
    bad = np.flatnonzero((got.reshape(-1, size) != want.reshape(-1, size)).any(axis=1))
    return int(bad[0]) if bad.size else None


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("case", CASES)
def test_golden_vectors(backend, case):
    if backend == "numba":
        pytest.importorskip("numba")
    for tname in MANIFEST["cases"][case]["outputs"]:
        x, want = golden(case, tname)
        got = quantize(x, T[tname], backend=backend)
        assert got.dtype == np.uint8 and got.shape == want.shape, (case, tname)
        assert first_bad_block(got, want, T[tname]) is None, (case, tname, first_bad_block(got, want, T[tname]))


def fresh_rows(seed: int, n_per_row: int = 512) -> np.ndarray:
    """New inputs each distribution the vectors cover, plus awkward rows."""
    rng = np.random.default_rng(seed)
    rows = [
        rng.standard_normal((3, n_per_row)) * 0.02,
        rng.standard_t(2, (3, n_per_row)) * 0.05,
        rng.uniform(-1, 1, (3, n_per_row)) * 10.0 ** rng.uniform(-7, 3, (3, 1)),
        np.abs(rng.standard_normal((2, n_per_row))),
        np.zeros((1, n_per_row)),
        np.where(rng.random((2, n_per_row)) < 0.05, rng.standard_normal((2, n_per_row)), 0.0),
    ]
    x = np.concatenate(rows).astype(np.float32)
    x[4, :17] = 3.0  # a constant run inside a zero row
    return x


@pytest.mark.parametrize("tname", TYPES)
def test_numba_matches_numpy_on_fresh_inputs(tname):
    pytest.importorskip("numba")
    x = fresh_rows(hash(tname) % 1000)
    ref = quantize(x, T[tname], backend="numpy")
    assert first_bad_block(quantize(x, T[tname], backend="numba", threads=1), ref, T[tname]) is None
    # split over threads at an odd boundary: same bytes
    assert first_bad_block(quantize(x, T[tname], backend="numba", threads=3), ref, T[tname]) is None


def test_thread_safe_from_a_pool():
    x = fresh_rows(7, 1024)
    want = {t: quantize(x, T[t], backend="numpy") for t in ("Q4_K", "Q6_K", "Q8_0")}
    with ThreadPoolExecutor(4) as pool:
        jobs = [(t, pool.submit(quantize, x, T[t], tensor_name=f"t{i}")) for i in range(3) for t in want]
        for t, job in jobs:
            assert np.array_equal(job.result(), want[t]), t


def test_plain_conversions():
    x = np.array([[1.0, -2.5, 65504.0, 1e-8, np.inf, 3.0e38]], np.float32)
    assert np.array_equal(quantize(x, T.F32).view(np.float32), x)
    with np.errstate(over="ignore"):
        assert np.array_equal(quantize(x, T.F16).view(np.float16), x.astype(np.float16))
    bf = quantize(x, T.BF16).view(np.uint16).astype(np.uint32) << 16
    assert np.array_equal(bf.view(np.float32)[0, :2], x[0, :2])  # exactly representable values survive
    assert quantize(x, T.BF16).shape == (1, 12)


def test_inf_scale_names_tensor_and_block():
    x = np.zeros((2, 512), np.float32)
    x[1, 300] = 1e12  # second row, block 1 of that row: global K block 3, Q8_0 block 25
    for qtype, block in ((T.Q4_K, 3), (T.Q8_0, 25), (T.Q6_K, 3)):
        with pytest.raises(QuantizationError) as err:
            quantize(x, qtype, tensor_name="blk.0.ffn_up.weight", backend="numpy")
        assert err.value.tensor == "blk.0.ffn_up.weight" and err.value.block == block
        assert "blk.0.ffn_up.weight" in str(err.value) and f"block {block}" in str(err.value)


def test_bad_shapes_and_names():
    with pytest.raises(QuantizationError):
        quantize(np.zeros((2, 100), np.float32), T.Q4_K, tensor_name="x")
    with pytest.raises(UnknownQuantError):
        quantize(np.zeros((1, 32), np.float32), T.IQ2_XXS)
    with pytest.raises(UnknownQuantError):
        resolve_backend("nonesuch")
    with pytest.raises(UnknownQuantError):
        resolve_backend("numpy", "cuda")


def test_auto_backend_prefers_numba():
    try:
        backend_module("numba")
    except ImportError:
        assert resolve_backend() == ("numpy", "cpu")
    else:
        assert resolve_backend() == ("numba", "cpu")


def test_reference_nearest_int_is_the_bit_trick():
    from modelpack.quant.reference import nearest_int

    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -7.51, 4194303.0], np.float32)
    assert nearest_int(v).tolist() == [0, 2, 2, 0, -2, 3, -8, 4194303]
    # out of range it returns what llama.cpp's does, not round(): the low mantissa bits
    big = np.array([1e10], np.float32)
    bits = (big + np.float32(12582912.0)).view(np.int32)
    assert nearest_int(big)[0] == (bits[0] & 0x7FFFFF) - 0x400000
