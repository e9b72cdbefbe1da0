"""Shared fixtures: synthesized checkpoints (same bytes as the golden vectors' inputs) and data paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
DATA = TESTS / "data"
TOKENIZERS = DATA / "tokenizers"
MAKE_CKPT = TESTS / "make_ckpt.py"

MISTRAL_SPM = TOKENIZERS / "mistral-7b-v0.1.tokenizer.model"
GEMMA_SPM = TOKENIZERS / "gemma-256k.tokenizer.model"
STARCODER_JSON = TOKENIZERS / "starcoder-eot.tokenizer.json"

# The arguments ../shared/vectors/convert/README.md gives for each golden input.
GOLDEN_ARGS = {
    "s1": ["--tokenizer", str(MISTRAL_SPM), "--arch", "mistral", "--hidden", "512", "--layers", "2",
           "--heads", "8", "--kv-heads", "2", "--ffn", "1536", "--seed", "0"],
    "s2": ["--tokenizer", str(MISTRAL_SPM), "--arch", "llama", "--hidden", "512", "--layers", "4",
           "--heads", "4", "--kv-heads", "4", "--ffn", "1280", "--seed", "1", "--shards", "3", "--outliers"],
    "e1": ["--arch", "gemma", "--tokenizer", str(MISTRAL_SPM), "--hidden", "512", "--layers", "2",
           "--heads", "4", "--kv-heads", "1", "--ffn", "1536", "--seed", "4", "--shards", "1"],
    "g1": ["--arch", "gpt_bigcode", "--tokenizer", str(STARCODER_JSON), "--hidden", "256", "--layers", "2",
           "--heads", "4", "--seed", "3", "--shards", "1"],
}


def make_checkpoint(out: Path, *args: str) -> Path:
    """Write a synthesized Hugging Face checkpoint folder with tests/make_ckpt.py."""
    subprocess.run([sys.executable, str(MAKE_CKPT), str(out), *args], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def golden_checkpoint(tmp_path_factory):
    """golden_checkpoint('s1') -> folder with the exact bytes the golden digests were made from."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = make_checkpoint(tmp_path_factory.mktemp(f"ckpt-{name}") / name, *GOLDEN_ARGS[name])
        return cache[name]

    return get


@pytest.fixture
def modelpack_home(tmp_path, monkeypatch):
    """An empty store for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    return home
