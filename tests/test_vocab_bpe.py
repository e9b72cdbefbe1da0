"""BPE vocabularies: tokenizer.json -> GGUF tokenizer keys as llama.cpp's converter writes them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from conftest import DATA, STARCODER_JSON, TOKENIZERS
from gguf_digest import digest
from modelpack.convert.vocab_bpe import (CONTROL, NORMAL, UNUSED, USER_DEFINED, load_bpe_vocab,
                                         pre_tokenizer_hash, pre_tokenizer_name)
from modelpack.errors import SourceError

STARCODER_GGUF = TOKENIZERS / "ggml-vocab-starcoder.gguf"
G1_KV = json.loads((DATA / "convert" / "g1-f32.json").read_text())["kv"]


def long_array_digest(values) -> str:
    """How tests/gguf_digest.py summarises arrays longer than 64 entries."""
    return "sha256:" + hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()


def rebuild_tokenizer(vocab_gguf: Path, extra_special: tuple[str, ...] = ()) -> Tokenizer:
    """A Hugging Face tokenizer from a llama.cpp vocab-only GGUF of a StarCoder-style vocabulary:
    byte-level BPE with digits split one by one, CONTROL tokens as special added tokens."""
    fields = gguf.GGUFReader(vocab_gguf).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty == CONTROL] + list(extra_special)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def ggml_vocab_vectors(vocab_gguf: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test vectors: inputs split on __ggml_vocab_test__, one line of ids each."""
    texts = Path(f"{vocab_gguf}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    lines = Path(f"{vocab_gguf}.out").read_text(encoding="utf-8").split("\n")[:len(texts)]
    return [(text, [int(x) for x in line.split()]) for text, line in zip(texts, lines)]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    """A folder holding the tokenizer.json rebuilt from ggml-vocab-starcoder.gguf plus <|end_of_turn|>."""
    folder = tmp_path_factory.mktemp("rebuilt")
    rebuild_tokenizer(STARCODER_GGUF, ("<|end_of_turn|>",)).save(str(folder / "tokenizer.json"))
    return folder


def test_rebuilt_tokenizer_passes_llama_cpp_vectors(rebuilt):
    tok = Tokenizer.from_file(str(rebuilt / "tokenizer.json"))
    vectors = ggml_vocab_vectors(STARCODER_GGUF)
    assert len(vectors) > 40
    for text, ids in vectors:
        assert tok.encode(text, add_special_tokens=False).ids == ids, text


def test_rebuilt_tokenizer_agrees_with_shipped_rebuild(rebuilt):
    ours = Tokenizer.from_file(str(rebuilt / "tokenizer.json"))
    shipped = Tokenizer.from_file(str(STARCODER_JSON))
    assert ours.get_vocab(with_added_tokens=True) == shipped.get_vocab(with_added_tokens=True)
    assert ours.get_vocab_size() == shipped.get_vocab_size() == 49153
    assert json.loads(ours.to_str())["model"]["merges"] == json.loads(shipped.to_str())["model"]["merges"]
    for text, _ in ggml_vocab_vectors(STARCODER_GGUF):
        assert ours.encode(text).ids == shipped.encode(text).ids
    assert ours.encode("hi<|end_of_turn|>").ids[-1] == 49152


def test_pre_tokenizer_is_recognised_as_starcoder(rebuilt):
    for path in (rebuilt / "tokenizer.json", STARCODER_JSON):
        tok = Tokenizer.from_file(str(path))
        assert pre_tokenizer_hash(tok) == "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34"
        assert pre_tokenizer_name(tok) == "starcoder" == G1_KV["tokenizer.ggml.pre"]


def test_unknown_pre_tokenizer_is_an_error(rebuilt, tmp_path):
    tok = Tokenizer.from_file(str(rebuilt / "tokenizer.json"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # a different split
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(SourceError, match="pre-tokenizer not recognised") as err:
        load_bpe_vocab(tmp_path)
    assert err.value.path == str(tmp_path / "tokenizer.json")


def test_g1_vocabulary_matches_golden(golden_checkpoint):
    folder = golden_checkpoint("g1")
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    vocab = load_bpe_vocab(folder, vocab_size=vocab_size)
    assert (vocab.model, vocab.pre) == ("gpt2", "starcoder")
    assert len(vocab.tokens) == 49153 and vocab.tokens[49152] == "<|end_of_turn|>"
    assert vocab.token_types[:38] == [CONTROL] * 38 and vocab.token_types[49152] == CONTROL
    assert vocab.token_types[38] == NORMAL
    assert long_array_digest(vocab.tokens) == G1_KV["tokenizer.ggml.tokens"]
    assert long_array_digest(vocab.token_types) == G1_KV["tokenizer.ggml.token_type"]
    assert long_array_digest(vocab.merges) == G1_KV["tokenizer.ggml.merges"]


def test_g1_keys_written_like_llama_cpp(golden_checkpoint, tmp_path):
    folder = golden_checkpoint("g1")
    vocab = load_bpe_vocab(folder, vocab_size=49153)
    out = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(out), "starcoder")
    vocab.add_to_gguf(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    kv = digest(str(out))["kv"]
    golden = {k: v for k, v in G1_KV.items() if k.startswith("tokenizer.")}
    written = {k: v for k, v in kv.items() if k.startswith("tokenizer.")}
    assert written == golden
    assert list(written) == list(golden)  # same order as convert_hf_to_gguf.py


def write_folder(tmp_path: Path, tokenizer_config: dict, extra_added: list[dict] = ()) -> Path:
    tokenizer = json.loads(STARCODER_JSON.read_text(encoding="utf-8"))
    tokenizer["added_tokens"] += list(extra_added)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return tmp_path


def test_padding_and_added_token_types(tmp_path):
    """Added tokens as a tokenizer saved by transformers lists them (tokenizer.json and
    tokenizer_config.json agree); expected values are what llama.cpp + transformers 5.23 give."""
    def added(token_id, content, special, normalized=False):
        return {"id": token_id, "content": content, "special": special, "normalized": normalized,
                "lstrip": False, "rstrip": False, "single_word": False}
    extra = [added(49153, "<tool>", False), added(49154, "<|im_sep|>", False), added(49155, "x .y", False),
             added(49156, " hello world", False, normalized=True)]
    everything = json.loads(STARCODER_JSON.read_text(encoding="utf-8"))["added_tokens"] + extra
    folder = write_folder(tmp_path, {
        "eos_token": "<|end_of_turn|>", "clean_up_tokenization_spaces": True,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in everything}},
        extra)
    vocab = load_bpe_vocab(folder, vocab_size=49160)
    assert vocab.tokens[49153:49157] == ["<tool>", "<|im_sep|>", "x .y", " hello world"]
    # <|...|> looks special even when not marked so; transformers 5 no longer cleans up " ." on decode
    assert vocab.token_types[49153:49157] == [USER_DEFINED, CONTROL, USER_DEFINED, USER_DEFINED]
    assert vocab.tokens[49157:] == [f"[PAD{i}]" for i in range(49157, 49160)]
    assert vocab.token_types[49157:] == [UNUSED] * 3
    assert vocab.special.special_token_ids["eos"] == 49152
    # Without vocab_size the tokenizer's own size is used.
    assert len(load_bpe_vocab(folder).tokens) == 49157


def test_input_errors(tmp_path):
    with pytest.raises(SourceError, match="no tokenizer.json"):
        load_bpe_vocab(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(SourceError, match="cannot be loaded"):
        load_bpe_vocab(tmp_path)
    folder = write_folder(tmp_path, {})
    with pytest.raises(SourceError, match="vocab_size is 100"):
        load_bpe_vocab(folder, vocab_size=100)
