"""Tokenizers from .model, tokenizer.json, checkpoint folders and GGUF vocabularies."""

from __future__ import annotations

import pytest

from conftest import GEMMA_SPM, MISTRAL_SPM, STARCODER_JSON, TOKENIZERS
from modelpack.errors import GGUFError, SourceError
from modelpack.tokenize import load_checkpoint_tokenizer, load_gguf_tokenizer, load_sentencepiece, load_tokenizer

LLAMA_GGUF = TOKENIZERS / "ggml-vocab-llama-spm.gguf"
STARCODER_GGUF = TOKENIZERS / "ggml-vocab-starcoder.gguf"


def vectors(gguf_path):
    """llama.cpp's tokenizer test vectors: inputs split by __ggml_vocab_test__ lines, one id line each."""
    inputs = gguf_path.with_name(gguf_path.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outputs = gguf_path.with_name(gguf_path.name + ".out").read_text(encoding="utf-8").split("\n")
    assert len(inputs) == len(outputs) > 40
    return [(text, [int(x) for x in ids.split()]) for text, ids in zip(inputs, outputs)]


@pytest.fixture(scope="module")
def llama_tok():
    return load_gguf_tokenizer(LLAMA_GGUF)


@pytest.fixture(scope="module")
def starcoder_tok():
    return load_gguf_tokenizer(STARCODER_GGUF)


def test_llama_gguf_vocab_passes_llama_cpp_vectors(llama_tok):
    assert llama_tok.kind == "sentencepiece" and llama_tok.bos_id == 1 and llama_tok.add_bos
    bad = [(text, ids, llama_tok.encode(text)) for text, ids in vectors(LLAMA_GGUF) if llama_tok.encode(text) != ids]
    assert not bad, bad[:3]


def test_starcoder_gguf_vocab_passes_llama_cpp_vectors(starcoder_tok):
    assert starcoder_tok.kind == "bpe"
    bad = [(text, ids) for text, ids in vectors(STARCODER_GGUF) if starcoder_tok.encode(text) != ids]
    assert not bad, bad[:3]


def test_starcoder_tokenizer_json_agrees_with_gguf_vocab(starcoder_tok):
    tok = load_tokenizer(STARCODER_JSON)
    assert tok.specials["<|end_of_turn|>"] == 49152
    for text, ids in vectors(STARCODER_GGUF):
        assert tok.encode(text) == ids, text


def test_split_special_gives_every_piece_a_dummy_prefix():
    tok = load_sentencepiece(MISTRAL_SPM, added={"<|end_of_turn|>": 32000})
    text = "<s>GPT4 Correct User: Hi<|end_of_turn|>GPT4"
    split = tok.encode(text)
    assert split[0] == 1 and split.count(420) == 2 and 32000 in split  # '▁G' both times
    legacy_false = tok.encode(text, convention="legacy-false")
    assert 28777 in legacy_false and legacy_false.count(420) == 0  # 'G' without the space
    assert tok.decode(split) == text
    assert tok.piece(32000) == "<|end_of_turn|>" and tok.vocab_size == 32001


def test_checkpoint_tokenizer_reads_added_tokens(golden_checkpoint):
    tok = load_checkpoint_tokenizer(golden_checkpoint("s1"))
    assert tok.specials["<|end_of_turn|>"] == 32000 and tok.specials["<|pad_0|>"] == 32001
    assert tok.eos_id == 32000 and tok.bos_id == 1 and tok.legacy is True
    assert "GPT4 Correct" in tok.chat_template


def test_gemma_has_no_dummy_prefix_and_renamed_specials():
    tok = load_sentencepiece(GEMMA_SPM, added={"<|im_start|>": 106, "<|im_end|>": 107})
    assert not tok.add_dummy_prefix
    assert tok.encode("<|im_start|>user") [0] == 106 and "<start_of_turn>" not in tok.specials
    assert tok.piece(107) == "<|im_end|>"
    with pytest.raises(SourceError, match="ordinary piece"):
        load_sentencepiece(GEMMA_SPM, added={"<|x|>": 1000})


def test_bad_inputs(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(GGUFError):
        load_gguf_tokenizer(bad)
    with pytest.raises(SourceError):
        load_tokenizer(tmp_path / "missing.model")
    with pytest.raises(SourceError, match="no tokenizer"):
        load_checkpoint_tokenizer(tmp_path)


def test_gguf_vocabulary_with_gemma_names_for_bos_and_eos(tmp_path):
    """SentencePiece looks for BOS/EOS by the names <s>/</s>; a Gemma vocabulary calls them <bos>/<eos>,
    so the ids come from tokenizer.ggml.bos_token_id/eos_token_id (once the Go side lost its BOS)."""
    import gguf

    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<end_of_turn>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "a"]
    types = [3, 3, 3, 2, 4] + [6] * 256 + [1, 1]
    path = tmp_path / "gemma-vocab.gguf"
    w = gguf.GGUFWriter(str(path), "gemma")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tok = load_gguf_tokenizer(path)
    assert (tok.bos_id, tok.eos_id) == (2, 1)
    assert tok.encode("a<end_of_turn>", add_bos=True) == [2, tokens.index("a"), 4]
