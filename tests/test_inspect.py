"""`modelpack inspect`: architecture, parameters, file type, summarised key/values, tensor types."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from modelpack.cli import main
from modelpack.convert import convert
from modelpack.errors import GGUFError
from modelpack.gguf_info import ARRAY_HEAD, inspect_gguf


@pytest.fixture(scope="module")
def q8(golden_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "e1.gguf"
    convert(golden_checkpoint("e1"), out, outtype="q8_0")
    return out


def test_inspect_summary(q8):
    info = inspect_gguf(q8)
    reader = gguf.GGUFReader(q8)
    assert info["architecture"] == "gemma" and info["file_type"] == "Q8_0" and info["file_type_id"] == 7
    assert info["parameter_count"] == sum(int(np.prod(t.shape)) for t in reader.tensors)
    assert info["n_tensors"] == len(reader.tensors) == len(info["tensors"])
    hist = info["type_histogram"]
    assert sum(h["count"] for h in hist.values()) == info["n_tensors"]
    assert set(hist) == {t.tensor_type.name for t in reader.tensors}
    assert hist["F32"]["count"] == sum(1 for t in reader.tensors if t.name.endswith("norm.weight"))
    tokens = info["kv"]["tokenizer.ggml.tokens"]
    assert tokens["length"] == 32000 and len(tokens["head"]) == ARRAY_HEAD and tokens["head"][1] == "<s>"
    assert info["kv"]["gemma.block_count"] == 2


def test_inspect_cli_json_and_table(q8, capsys):
    assert main(["inspect", str(q8), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file_type"] == "Q8_0" and data["n_tensors"] == inspect_gguf(q8)["n_tensors"]
    assert main(["inspect", str(q8)]) == 0
    text = capsys.readouterr().out
    assert "gemma" in text and "token_embd.weight" in text and "Q8_0" in text and "x 32000" in text


def test_inspect_rejects_a_non_gguf(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(GGUFError):
        inspect_gguf(bad)
    assert main(["inspect", str(bad)]) != 0
    assert str(bad) in capsys.readouterr().err.splitlines()[0]
