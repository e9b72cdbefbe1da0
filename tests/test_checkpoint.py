"""Checkpoint access: shard order, lazy tensors, row reads, Hub repo ids through the local HF cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import TESTS, MISTRAL_SPM, make_checkpoint
from gguf_digest import digest
from modelpack.checkpoint import open_checkpoint, read_header
from modelpack.errors import SourceError

ARGS = ["--tokenizer", str(MISTRAL_SPM), "--arch", "mistral", "--hidden", "64", "--layers", "2", "--heads", "4",
        "--kv-heads", "2", "--ffn", "96", "--seed", "3", "--shards", "3"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "mistral-tiny", *ARGS)


def test_open_local_folder(folder):
    with open_checkpoint(folder) as ck:
        assert ck.architecture == "MistralForCausalLM"
        assert ck.config["hidden_size"] == 64 and ck.hparams["head_dim"] == 16  # transformers fills head_dim
        assert ck.tokenizer_model == folder / "tokenizer.model" and ck.tokenizer_json is None
        names = ck.tensor_names()
        index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
        assert sorted(names) == sorted(index)
        # shard by shard, names sorted inside each shard (llama.cpp's converter order)
        shards = [index[n] for n in names]
        assert shards == sorted(shards)
        for s in set(shards):
            part = [n for n in names if index[n] == s]
            assert part == sorted(part)


def test_tensor_values_are_the_stored_bf16_widened(folder):
    with open_checkpoint(folder) as ck:
        name = "model.layers.1.mlp.down_proj.weight"
        raw, ref = ck.raw(name), ck.tensors[name]
        assert ref.dtype == "BF16" and raw.dtype == np.uint16 and raw.shape == (64, 96)
        x = ck.tensor(name)
        assert x.dtype == np.float32 and x.shape == (64, 96)
        assert np.array_equal(x.view(np.uint32) >> 16, raw.astype(np.uint32))
        assert np.array_equal(ck.read_rows(name, 10, 20), raw[10:20])


def test_read_header_reports_offsets_inside_the_file(folder):
    for shard in sorted(folder.glob("*.safetensors")):
        size = shard.stat().st_size
        for ref in read_header(shard):
            assert 8 < ref.offset and ref.offset + ref.nbytes <= size


def test_hub_repo_id_from_the_local_cache_offline(folder, tmp_path):
    """A repo id resolves through huggingface_hub with HF_HOME and HF_HUB_OFFLINE honoured."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--acme--tiny"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = tmp_path / "hub.gguf"
    run = subprocess.run([sys.executable, "-m", "modelpack", "convert", "acme/tiny", "-o", str(out), "--json"],
                         env=env, capture_output=True, text=True, cwd=TESTS.parent)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["architecture"] == "llama"
    local = tmp_path / "local.gguf"
    from modelpack.convert import convert

    convert(folder, local)
    assert digest(str(out))["tensors"] == digest(str(local))["tensors"]
    missing = subprocess.run([sys.executable, "-m", "modelpack", "convert", "acme/absent@v1", "-o",
                              str(tmp_path / "x.gguf")], env=env, capture_output=True, text=True, cwd=TESTS.parent)
    assert missing.returncode != 0 and "acme/absent" in missing.stderr.splitlines()[0]
    assert not (tmp_path / "x.gguf").exists()


def test_bad_source_names(tmp_path):
    with pytest.raises(SourceError, match="no such checkpoint folder"):
        open_checkpoint(tmp_path / "a" / "b" / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="config.json"):
        open_checkpoint(tmp_path / "empty")
