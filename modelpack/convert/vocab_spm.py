"""SentencePiece vocabularies (tokenizer.model) -> the tokenizer.* keys llama.cpp's converter writes.

Ids below config.json's vocab_size start as `[PAD{id}]` (score -10000, UNUSED); the .model fills its
pieces; tokenizer_config.json's added_tokens_decoder (and added_tokens.json) override theirs with
score -1000. Special ids, add_bos/add_eos and the chat template come from special.SpecialVocab.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf

from modelpack.convert.special import SpecialVocab
from modelpack.errors import SourceError


TokenType = gguf.TokenType  # SentencePiece piece types and GGUF token types share these numbers


# Added tokens some models forget to mark special, which the converter treats as control tokens anyway.
SPECIAL_LOOKING = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
SPECIAL_BRACKETS = (("<|", "|>"), ("<｜", "｜>"), ("<unused", ">"))

# Vocabulary sizes that identify a model family with extra special tokens (CodeLlama's infill ids).
CODELLAMA_VOCAB = 32016
CODELLAMA_SPECIAL = (("prefix", 32007), ("suffix", 32008), ("middle", 32009), ("eot", 32010))
GRANITE_VOCAB = 49152
# GemmaModel.set_vocab's CodeGemma ids (only the ones gguf has a writer method for end up in the file)
GEMMA_SPECIAL = (("prefix", 67), ("suffix", 69), ("middle", 68), ("fsep", 70), ("eot", 107))


def looks_special(token: str) -> bool:
    return token in SPECIAL_LOOKING or any(token.startswith(a) and token.endswith(b) for a, b in SPECIAL_BRACKETS)


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"cannot read JSON: {e}", path=str(path)) from e


def sentencepiece_vocab(folder: Path, vocab_size: int | None) -> tuple[list[bytes], list[float], list[int]]:
    from sentencepiece import SentencePieceProcessor

    model = folder / "tokenizer.model"
    if not model.is_file():
        raise SourceError("missing tokenizer.model (this architecture needs a SentencePiece vocabulary)",
                          path=str(model))
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(model))
    except (OSError, RuntimeError) as e:
        raise SourceError(f"cannot load SentencePiece model: {e}", path=str(model)) from e
    n = vocab_size or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [int(TokenType.UNUSED)] * n
    for i in range(min(n, sp.vocab_size())):
        kind = (TokenType.UNKNOWN if sp.IsUnknown(i) else TokenType.CONTROL if sp.IsControl(i)
                else TokenType.UNUSED if sp.IsUnused(i) else TokenType.BYTE if sp.IsByte(i) else TokenType.NORMAL)
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode("utf-8"), sp.GetScore(i), int(kind)

    for text, i in _json(folder / "added_tokens.json").items():
        if i < n:
            tokens[i], scores[i], types[i] = text.encode("utf-8"), -1000.0, int(TokenType.USER_DEFINED)

    added = _json(folder / "tokenizer_config.json").get("added_tokens_decoder", {})
    for key, data in added.items():
        i, text = int(key), data["content"]
        if i >= n:
            continue
        if data.get("special") or looks_special(text):
            types[i] = int(TokenType.CONTROL)
        else:
            text = text.replace("\u2581", " ")  # user-defined tokens are stored pre-normalized
            types[i] = int(TokenType.USER_DEFINED)
        tokens[i], scores[i] = text.encode("utf-8"), -1000.0
    return tokens, scores, types


def _write_spm(checkpoint, writer: gguf.GGUFWriter, hp: dict) -> int:
    tokens, scores, types = sentencepiece_vocab(checkpoint.path, hp.get("vocab_size"))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    SpecialVocab(checkpoint.path, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    return len(tokens)


def _special_ids(folder: Path, writer: gguf.GGUFWriter, ids, *, keep_template: bool = True) -> None:
    special = SpecialVocab(folder, load_merges=False, special_token_types=[t for t, _ in ids])
    for typ, tid in ids:
        special._set_special_token(typ, tid)
    if not keep_template:
        special.chat_template = None
    special.add_to_gguf(writer, quiet=True)


def add_sentencepiece_vocab(checkpoint, writer: gguf.GGUFWriter, hp: dict) -> None:
    """LlamaModel.set_vocab for SentencePiece checkpoints."""
    config = _json(checkpoint.path / "tokenizer_config.json")
    if (prefix := config.get("add_prefix_space")) is not None:
        writer.add_add_space_prefix(prefix)
    _write_spm(checkpoint, writer, hp)
    if hp.get("vocab_size", 32000) == CODELLAMA_VOCAB:
        _special_ids(checkpoint.path, writer, CODELLAMA_SPECIAL)
    if hp.get("vocab_size", 32000) == GRANITE_VOCAB:
        writer.add_add_bos_token(False)


def add_gemma_vocab(checkpoint, writer: gguf.GGUFWriter, hp: dict) -> None:
    """GemmaModel.set_vocab."""
    _write_spm(checkpoint, writer, hp)
    _special_ids(checkpoint.path, writer, GEMMA_SPECIAL, keep_template=False)
    writer.add_add_space_prefix(False)
