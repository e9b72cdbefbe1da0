"""Every input error of `modelpack convert`: one line naming the place, non-zero exit, no output file."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from conftest import MISTRAL_SPM, make_checkpoint
from modelpack.checkpoint import read_header
from modelpack.cli import main
from modelpack.convert import convert
from modelpack.errors import CheckpointError, OutputExistsError, SourceError

TINY = ["--tokenizer", str(MISTRAL_SPM), "--arch", "llama", "--hidden", "64", "--layers", "1", "--heads", "2",
        "--kv-heads", "1", "--ffn", "128", "--seed", "7", "--shards", "2"]


@pytest.fixture(scope="module")
def tiny_master(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny", *TINY)


@pytest.fixture
def ckpt(tiny_master, tmp_path):
    return shutil.copytree(tiny_master, tmp_path / "ckpt")


def run_cli(capsys, ckpt, out, *extra):
    code = main(["convert", str(ckpt), "-o", str(out), "-q", *extra])
    err = capsys.readouterr().err
    return code, err


def assert_fails(capsys, ckpt, tmp_path, *needles, extra=()):
    out = tmp_path / "out" / "model.gguf"
    code, err = run_cli(capsys, ckpt, out, *extra)
    assert code != 0
    first = err.splitlines()[0]
    assert first.startswith("error: ")
    for needle in needles:
        assert needle in first, (needle, first)
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], leftovers  # neither the output nor a partial temp file
    return first


def shard(ckpt, i=1):
    return ckpt / f"model-{i:05d}-of-00002.safetensors"


def test_missing_config(capsys, ckpt, tmp_path):
    (ckpt / "config.json").unlink()
    assert_fails(capsys, ckpt, tmp_path, "config.json", "missing")
    with pytest.raises(SourceError):
        convert(ckpt, tmp_path / "x.gguf")


def test_missing_tokenizer(capsys, ckpt, tmp_path):
    (ckpt / "tokenizer.model").unlink()
    assert_fails(capsys, ckpt, tmp_path, "tokenizer.model", "missing")


def test_unsupported_architecture_lists_the_supported_ones(capsys, ckpt, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    line = assert_fails(capsys, ckpt, tmp_path, "FalconForCausalLM", "config.json")
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "GemmaForCausalLM"):
        assert arch in line


def test_index_names_a_missing_shard(capsys, ckpt, tmp_path):
    shard(ckpt, 2).unlink()
    assert_fails(capsys, ckpt, tmp_path, "model-00002-of-00002.safetensors", "missing")


def test_truncated_header(capsys, ckpt, tmp_path):
    data = shard(ckpt).read_bytes()
    shard(ckpt).write_bytes(data[:100])  # the length prefix promises more header than there is
    assert_fails(capsys, ckpt, tmp_path, "model-00001-of-00002.safetensors", "truncated")


def test_truncated_data(capsys, ckpt, tmp_path):
    data = shard(ckpt).read_bytes()
    shard(ckpt).write_bytes(data[:-1000])
    assert_fails(capsys, ckpt, tmp_path, "model-00001-of-00002.safetensors", "truncated")


def test_corrupt_header(capsys, ckpt, tmp_path):
    data = bytearray(shard(ckpt).read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8:8 + n] = b"\xff" * n  # not JSON
    shard(ckpt).write_bytes(bytes(data))
    assert_fails(capsys, ckpt, tmp_path, "model-00001-of-00002.safetensors", "corrupt")


def test_shape_disagrees_with_config(capsys, ckpt, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 256  # the checkpoint's MLP is 128 wide
    (ckpt / "config.json").write_text(json.dumps(cfg))
    line = assert_fails(capsys, ckpt, tmp_path, "mlp.", "disagrees with config.json", "256")
    assert "safetensors" in line


def test_duplicate_tensor_across_shards(capsys, ckpt, tmp_path):
    (ckpt / "model.safetensors.index.json").unlink()
    shutil.copy(shard(ckpt, 1), ckpt / "model-extra.safetensors")  # every tensor of shard 1 twice
    assert_fails(capsys, ckpt, tmp_path, "two shards", "model-extra.safetensors")


def poison(ckpt, name, count):
    """Overwrite the first `count` values of tensor `name` with BF16 NaN / +Inf."""
    for i in (1, 2):
        for ref in read_header(shard(ckpt, i)):
            if ref.name == name:
                with open(ref.path, "r+b") as f:
                    f.seek(ref.offset)
                    f.write((struct.pack("<H", 0x7FC0) + struct.pack("<H", 0x7F80)) * (count // 2))
                return ref
    raise AssertionError(name)


def test_nonfinite_weights_name_tensor_and_count(capsys, ckpt, tmp_path):
    name = "model.layers.0.mlp.up_proj.weight"
    poison(ckpt, name, 6)
    assert_fails(capsys, ckpt, tmp_path, name, "6 NaN/Inf", "--allow-nonfinite")
    with pytest.raises(CheckpointError) as e:
        convert(ckpt, tmp_path / "x.gguf", quant="Q8_0")
    assert e.value.tensor == name


def test_allow_nonfinite_proceeds(capsys, ckpt, tmp_path):
    poison(ckpt, "model.layers.0.mlp.up_proj.weight", 4)
    out = tmp_path / "ok.gguf"
    code, _ = run_cli(capsys, ckpt, out, "--allow-nonfinite", "--outtype", "f16")
    assert code == 0 and out.stat().st_size > 0


def test_output_exists_needs_force(capsys, ckpt, tmp_path):
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"keep me")
    code, err = run_cli(capsys, ckpt, out)
    assert code != 0 and str(out) in err.splitlines()[0] and "--force" in err
    assert out.read_bytes() == b"keep me"
    with pytest.raises(OutputExistsError):
        convert(ckpt, out)
    code, _ = run_cli(capsys, ckpt, out, "--force")
    assert code == 0 and out.read_bytes()[:4] == b"GGUF"


def test_unknown_outtype_and_mix(capsys, ckpt, tmp_path):
    assert_fails(capsys, ckpt, tmp_path, "q3_x", extra=("--outtype", "q3_x"))
    assert_fails(capsys, ckpt, tmp_path, "Q9_K", extra=("--quant", "Q9_K"))


def test_not_a_folder_nor_a_repo_id(capsys, tmp_path):
    code, err = run_cli(capsys, tmp_path / "nowhere" / "at" / "all", tmp_path / "o.gguf")
    assert code != 0 and "nowhere" in err.splitlines()[0]
