"""llama.cpp's C quantizer (ggml_quantize_chunk via ctypes) against the golden vectors and modelpack's kernels."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from conftest import DATA

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llama

from modelpack.errors import QuantizationError  # noqa: E402
from modelpack.llamacpp import ggml_quantize  # noqa: E402

QUANT = DATA / "quant"
MANIFEST = json.loads((QUANT / "manifest.json").read_text())
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


@pytest.mark.parametrize("case", sorted(MANIFEST["cases"]))
def test_wrapper_reproduces_golden_vectors(case):
    """Proves the ctypes wrapper: the installed library writes the published bytes."""
    data = np.load(QUANT / f"{case}.npy")
    for name, _ in MANIFEST["cases"][case]["outputs"].items():
        got = ggml_quantize(data, T[name])
        assert got.dtype == np.uint8 and got.shape[0] == data.shape[0]
        assert got.tobytes() == (QUANT / f"{case}.{name}.bin").read_bytes(), (case, name)


def test_wrapper_refuses_what_ggml_would_abort_on():
    with pytest.raises(QuantizationError):
        ggml_quantize(np.zeros((2, 100), np.float32), T.Q4_K)  # not a multiple of 256
    with pytest.raises(QuantizationError):
        ggml_quantize(np.zeros((1, 256), np.float32), T.IQ2_XXS)  # needs an imatrix


def _fresh_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A bounded batch of new inputs each run: weight-like, heavy-tailed, spiky and mixed-scale rows."""
    rows, n = 12, 512
    normal = rng.standard_normal((rows, n), dtype=np.float32) * np.float32(0.02)
    heavy = rng.standard_t(3, (rows, n)).astype(np.float32) * np.float32(0.05)
    spiky = normal.copy()
    spiky.flat[rng.integers(0, spiky.size, 40)] *= 60.0
    mixed = rng.uniform(-1, 1, (rows, n)).astype(np.float32) * (10.0 ** rng.uniform(-6, 3, (rows, 1))).astype(np.float32)
    mixed[0] = 0.0
    mixed[1, :] = 0.25
    mixed[2, rng.integers(0, n, 500)] = 0.0  # mostly zeros
    return {"normal": normal, "heavy": heavy, "spiky": spiky, "mixed": mixed}


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_modelpack_kernels_match_llamacpp_on_fresh_inputs(backend):
    from modelpack.quant import backend_module, quantize

    try:
        backend_module(backend)
    except ImportError:
        pytest.skip(f"backend {backend} is not installed")
    seed = secrets.randbits(32)
    inputs = _fresh_inputs(np.random.default_rng(seed))
    for name in TYPES:
        for kind, data in inputs.items():
            expected = ggml_quantize(data, T[name])
            got = np.asarray(quantize(data, T[name], backend=backend, device="cpu"))
            assert got.dtype == np.uint8
            if got.tobytes() != expected.tobytes():
                flat_got = got.reshape(data.shape[0], -1)
                row = next(r for r in range(data.shape[0]) if flat_got[r].tobytes() != expected[r].tobytes())
                pytest.fail(f"{backend} {name} differs from llama.cpp on {kind} input, row {row} "
                            f"(seed {seed}: np.random.default_rng({seed}) in _fresh_inputs reproduces it)")
