"""Conversion output against llama.cpp's own (tests/data/convert): tensors, types, shapes, order, keys."""

from __future__ import annotations

import io
import json

import gguf
import numpy as np
import pytest

from conftest import DATA
from gguf_digest import digest
from modelpack.checkpoint import open_checkpoint
from modelpack.convert import convert, write_gguf

GOLDEN = DATA / "convert"
FLOAT_TYPES = ["f32", "f16", "bf16", "q8_0"]
MIXES = ["Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]


def assert_matches_golden(path, name):
    got, want = digest(str(path)), json.loads((GOLDEN / f"{name}.json").read_text())
    assert list(got["kv"]) == list(want["kv"]), "key/value order"
    for key, value in want["kv"].items():
        assert json.dumps(got["kv"][key], default=str) == json.dumps(value, default=str), key
    assert got["order"] == want["order"]
    for tname, t in want["tensors"].items():
        assert got["tensors"][tname] == t, tname


@pytest.mark.parametrize("ckpt", ["s1", "s2", "e1"])
@pytest.mark.parametrize("outtype", FLOAT_TYPES)
def test_float_outtypes_match_llama_cpp(golden_checkpoint, tmp_path, ckpt, outtype):
    out = tmp_path / "out.gguf"
    result = convert(golden_checkpoint(ckpt), out, outtype=outtype)
    assert_matches_golden(out, f"{ckpt}-{outtype}")
    assert result.file_type == outtype.upper()
    assert result.size == out.stat().st_size
    assert list(tmp_path.iterdir()) == [out]  # no temp file left behind


@pytest.mark.parametrize("ckpt", ["s1", "s2", "e1"])
@pytest.mark.parametrize("mix", MIXES)
def test_quant_mixes_match_llama_quantize(golden_checkpoint, tmp_path, ckpt, mix):
    out = tmp_path / "out.gguf"
    result = convert(golden_checkpoint(ckpt), out, quant=mix, threads=2)
    assert_matches_golden(out, f"{ckpt}-{mix}")
    assert result.file_type == mix


def test_auto_is_bf16_for_a_bf16_checkpoint(golden_checkpoint, tmp_path):
    out = tmp_path / "auto.gguf"
    assert convert(golden_checkpoint("s1"), out).file_type == "BF16"
    assert_matches_golden(out, "s1-bf16")


class WriteOnly:
    """A stream with write() only (like the blob store's hashing writer): no seek, no tell."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data) -> int:
        return self.buf.write(data)


def test_write_gguf_streams_to_a_write_only_object(golden_checkpoint, tmp_path):
    stream = WriteOnly()
    with open_checkpoint(golden_checkpoint("s1")) as ck:
        summary = write_gguf(ck, stream, outtype="f16", extra_kv={"general.license": "apache-2.0"})
    data = stream.buf.getvalue()
    assert summary.size == len(data)
    assert (summary.architecture, summary.file_type, summary.n_tensors) == ("llama", "F16", 21)
    assert (summary.bos_token_id, summary.eos_token_id, summary.vocab_size) == (1, 32000, 32002)
    path = tmp_path / "s.gguf"
    path.write_bytes(data)
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.license"].contents() == "apache-2.0"
    assert summary.parameter_count == sum(int(np.prod(t.shape)) for t in reader.tensors)
    # the tensors are those of the golden f16 conversion
    want = json.loads((GOLDEN / "s1-f16.json").read_text())["tensors"]
    assert digest(str(path))["tensors"] == want


def test_threads_do_not_change_the_bytes(golden_checkpoint, tmp_path):
    a = convert(golden_checkpoint("s2"), tmp_path / "a.gguf", quant="Q4_K_M", threads=1)
    b = convert(golden_checkpoint("s2"), tmp_path / "b.gguf", quant="Q4_K_M", threads=3)
    assert a.sha256 == b.sha256


def test_same_output_without_transformers(golden_checkpoint, tmp_path, monkeypatch):
    """transformers fills config defaults (head_dim...) for the converter; without it, our table does."""
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with open_checkpoint(golden_checkpoint("s1")) as ck:
        assert ck.hparams["head_dim"] == 64 and "transformers_version" not in ck.hparams
    out = tmp_path / "nt.gguf"
    convert(golden_checkpoint("s1"), out, outtype="bf16")
    assert_matches_golden(out, "s1-bf16")


def test_explicit_f16_intermediate_for_a_mix(golden_checkpoint, tmp_path):
    """--outtype f16 --quant: values rounded to F16 first, as `llama-quantize model-f16.gguf` would see them."""
    from modelpack.quant import quantize

    ck = golden_checkpoint("s1")
    convert(ck, tmp_path / "f16.gguf", outtype="f16")
    convert(ck, tmp_path / "q.gguf", outtype="f16", quant="Q4_0")
    f16 = {t.name: t for t in gguf.GGUFReader(tmp_path / "f16.gguf").tensors}
    q = {t.name: t for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors}
    name = "blk.0.ffn_up.weight"
    want = quantize(np.asarray(f16[name].data, dtype=np.float32), gguf.GGMLQuantizationType.Q4_0)
    assert np.array_equal(np.asarray(q[name].data).reshape(want.shape), want)
