"""The torch backend (eager float32 ops) against llama.cpp's golden vectors; CUDA when present."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from test_quant import CASES, MANIFEST, first_bad_block, fresh_rows, golden

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from modelpack.quant import quantize, resolve_backend  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES)
def test_golden_vectors_subset(case, device):
    """Every type and case; on the CPU a few rows of each (eager torch is slow there)."""
    rows = slice(None) if device == "cuda" else slice(0, 4)
    for tname in MANIFEST["cases"][case]["outputs"]:
        x, want = golden(case, tname)
        got = quantize(x[rows], T[tname], backend="torch", device=device)
        assert first_bad_block(got, want[rows], T[tname]) is None, (case, tname, device)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_numpy_on_fresh_inputs(device):
    x = fresh_rows(11, 256)
    for qtype in (T.Q4_K, T.Q6_K, T.Q3_K, T.Q5_1, T.Q8_0):
        want = quantize(x, qtype, backend="numpy")
        assert np.array_equal(quantize(x, qtype, backend="torch", device=device), want), qtype.name


def test_device_selection():
    assert resolve_backend("torch", "cpu") == ("torch", "cpu")
    assert resolve_backend("auto", "auto")[0] != "torch"  # the CPU default stays numba/numpy
    if not torch.cuda.is_available():
        from modelpack.errors import UnknownQuantError

        with pytest.raises(UnknownQuantError):
            resolve_backend("auto", "cuda")
