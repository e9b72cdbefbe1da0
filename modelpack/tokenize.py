"""Tokenizers for template verification, built on real tokenizer libraries.

Sources: a SentencePiece .model, a Hugging Face tokenizer.json, a checkpoint folder, or the
vocabulary inside a GGUF file. A GGUF 'llama' vocabulary (tokens, scores, types) becomes a
SentencePiece ModelProto; a 'gpt2' vocabulary (tokens, merges) becomes a `tokenizers` byte-level BPE.

A chat is tokenized by a *convention* (../shared/spec/chat-templates.md):
- split-special: split the text on special tokens, emit their ids, encode every text piece on its
  own (each gets SentencePiece's dummy prefix). llama.cpp with parse_special, HF legacy=True.
- legacy-false: transformers' LlamaTokenizer with legacy=False: only the text at the very start
  gets the dummy prefix, text right after a special token gets none.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import sentencepiece as spm

from modelpack.errors import GGUFError, SourceError

# GGUF token types (gguf.TokenType) and SentencePiece piece types share these numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_TYPES = (UNKNOWN, CONTROL, USER_DEFINED)


@dataclass
class Tokenizer:
    """A vocabulary with its special tokens, and a text encoder for pieces between them."""

    source: str
    kind: str  # "sentencepiece" or "bpe"
    specials: dict[str, int]  # tokens matched literally in text (control, user-defined, added)
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos: bool = True
    add_dummy_prefix: bool = False
    legacy: bool | None = None  # tokenizer_config.json's `legacy`, when the source has one
    chat_template: str | None = None  # the Jinja template shipped with the tokenizer, if any
    chat_template_origin: str | None = None  # the file it came from, for error messages
    extra_pieces: dict[int, str] = field(default_factory=dict)  # added ids beyond the base model
    _sp: spm.SentencePieceProcessor | None = None
    _hf: object | None = None  # tokenizers.Tokenizer

    # ---- vocabulary
    @property
    def vocab_size(self) -> int:
        base = self._sp.get_piece_size() if self._sp is not None else self._hf.get_vocab_size(with_added_tokens=True)
        return max([base - 1, *self.extra_pieces]) + 1

    def piece(self, token_id: int) -> str:
        if token_id in self.extra_pieces:
            return self.extra_pieces[token_id]
        if self._sp is not None:
            if 0 <= token_id < self._sp.get_piece_size():
                return self._sp.id_to_piece(token_id)
            return f"<id {token_id} out of vocabulary>"
        piece = self._hf.id_to_token(token_id)
        return piece if piece is not None else f"<id {token_id} out of vocabulary>"

    def token_id(self, piece: str) -> int | None:
        if piece in self.specials:
            return self.specials[piece]
        if self._sp is not None:
            i = self._sp.piece_to_id(piece)
            return None if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i) else i
        return self._hf.token_to_id(piece)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens written out as themselves."""
        out, run = [], []
        by_id = {v: k for k, v in self.specials.items()}

        def flush():
            if run:
                out.append(self._sp.decode(run) if self._sp is not None else self._hf.decode(run))
                run.clear()
        size = self._sp.get_piece_size() if self._sp is not None else self._hf.get_vocab_size(with_added_tokens=True)
        for i in ids:
            if i in by_id or not 0 <= i < size:  # an id this vocabulary lacks is shown as such
                flush()
                out.append(by_id.get(i) or self.piece(i))
            else:
                run.append(i)
        flush()
        return "".join(out)

    # ---- encoding
    def _encode_piece(self, text: str, *, prefix: bool) -> list[int]:
        if self._sp is None:
            return self._hf.encode(text, add_special_tokens=False).ids
        if prefix or not self.add_dummy_prefix:
            return self._sp.encode(text)
        # transformers' legacy=False trick: encode behind the unk piece, then drop its tokens
        unk_id = self._sp.unk_id()  # -1 when no piece has the UNKNOWN type (some GGUF vocabularies)
        unk = self._sp.id_to_piece(unk_id) if 0 <= unk_id < self._sp.get_piece_size() else "<unk>"
        return self._sp.encode(unk + text)[len(self._sp.encode(unk)):]

    def split_special(self, text: str) -> list[tuple[str, int | None]]:
        """Text cut into (special token, id) and (plain text, None) parts, longest token first."""
        if not self.specials:
            return [(text, None)] if text else []
        pattern = _special_pattern(tuple(sorted(self.specials, key=len, reverse=True)))
        parts, pos = [], 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                parts.append((text[pos:m.start()], None))
            parts.append((m.group(0), self.specials[m.group(0)]))
            pos = m.end()
        if pos < len(text):
            parts.append((text[pos:], None))
        return parts

    def encode(self, text: str, *, convention: str = "split-special", add_bos: bool = False) -> list[int]:
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        for i, (part, special) in enumerate(self.split_special(text)):
            if special is not None:
                ids.append(special)
            elif convention == "legacy-false":
                ids.extend(self._encode_piece(part, prefix=(i == 0)))
            else:
                ids.extend(self._encode_piece(part, prefix=True))
        return ids

    def encode_plain(self, text: str) -> list[int]:
        """Encode text without looking for special tokens (OpenChat's tokenize_fn)."""
        return self._encode_piece(text, prefix=True) if text else []


_PATTERNS: dict[tuple[str, ...], re.Pattern] = {}


def _special_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    if tokens not in _PATTERNS:
        _PATTERNS[tokens] = re.compile("|".join(re.escape(t) for t in tokens if t))
    return _PATTERNS[tokens]


# ---------------------------------------------------------------- SentencePiece

def _sp_types(sp: spm.SentencePieceProcessor) -> list[tuple[str, int]]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    return [(p.piece, p.type) for p in proto.pieces], proto.normalizer_spec.add_dummy_prefix


def from_sentencepiece(sp: spm.SentencePieceProcessor, *, source: str, added: dict[str, int] | None = None,
                       add_bos: bool = True) -> Tokenizer:
    pieces, dummy = _sp_types(sp)
    specials = {p: i for i, (p, t) in enumerate(pieces) if t in SPECIAL_TYPES}
    extra = {}
    for text, i in (added or {}).items():
        if i < len(pieces) and pieces[i][0] != text:
            # A model may rename a special token of its base vocabulary (zephyr-7b-gemma's ChatML
            # tokens take Gemma's turn tokens' ids); ordinary pieces cannot be renamed.
            if pieces[i][1] not in SPECIAL_TYPES:
                raise SourceError(f"added token {text!r} has id {i}, which is the ordinary piece "
                                  f"{pieces[i][0]!r} in the base vocabulary", path=source)
            specials.pop(pieces[i][0], None)
            extra[i] = text
        specials[text] = i
        if i >= len(pieces):
            extra[i] = text
    bos = sp.bos_id() if sp.bos_id() >= 0 else None
    eos = sp.eos_id() if sp.eos_id() >= 0 else None
    return Tokenizer(source=source, kind="sentencepiece", specials=specials, bos_id=bos, eos_id=eos,
                     add_bos=add_bos, add_dummy_prefix=dummy, extra_pieces=extra, _sp=sp)


def load_sentencepiece(path: str | Path, *, added: dict[str, int] | None = None, add_bos: bool = True) -> Tokenizer:
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as err:
        raise SourceError(f"cannot load SentencePiece model: {err}", path=str(path)) from None
    return from_sentencepiece(sp, source=str(path), added=added, add_bos=add_bos)


# ---------------------------------------------------------------- tokenizer.json

def from_hf_tokenizer(tok, *, source: str, bos: str | None = None, eos: str | None = None,
                      added: dict[str, int] | None = None, add_bos: bool = False) -> Tokenizer:
    specials = {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
    for text, i in (added or {}).items():
        if tok.token_to_id(text) not in (None, i):
            raise SourceError(f"added token {text!r} has id {tok.token_to_id(text)}, not {i}", path=source)
        if tok.token_to_id(text) is None:
            from tokenizers import AddedToken
            tok.add_special_tokens([AddedToken(text, special=True, normalized=False)])
        specials[text] = tok.token_to_id(text)
    return Tokenizer(source=source, kind="bpe", specials=specials,
                     bos_id=tok.token_to_id(bos) if bos else None, eos_id=tok.token_to_id(eos) if eos else None,
                     add_bos=add_bos, _hf=tok)


def load_tokenizer_json(path: str | Path, **kw) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a plain Exception on malformed files
        raise SourceError(f"cannot load tokenizer.json: {err}", path=str(path)) from None
    return from_hf_tokenizer(tok, source=str(path), **kw)


# ---------------------------------------------------------------- checkpoint folder

def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def load_checkpoint_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer of a Hugging Face checkpoint folder (tokenizer.model preferred, else tokenizer.json)."""
    folder = Path(folder)
    config = {}
    if (folder / "tokenizer_config.json").is_file():
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
            line = getattr(err, "lineno", None)
            raise SourceError(f"tokenizer_config.json is not valid JSON: {getattr(err, 'msg', err)}",
                              path=str(folder / "tokenizer_config.json"), line=line) from None
        if not isinstance(config, dict):
            raise SourceError("tokenizer_config.json is not a JSON object", path=str(folder / "tokenizer_config.json"))
    added = {tok["content"]: int(i) for i, tok in config.get("added_tokens_decoder", {}).items()}
    if (folder / "added_tokens.json").is_file():
        added.update(json.loads((folder / "added_tokens.json").read_text(encoding="utf-8")))
    bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    if (folder / "tokenizer.model").is_file():
        tok = load_sentencepiece(folder / "tokenizer.model", added=added, add_bos=config.get("add_bos_token", True))
    elif (folder / "tokenizer.json").is_file():
        tok = load_tokenizer_json(folder / "tokenizer.json", bos=bos, eos=eos, added=added,
                                  add_bos=config.get("add_bos_token", False))
    else:
        raise SourceError("no tokenizer.model or tokenizer.json in the checkpoint", path=str(folder))
    if bos and tok.token_id(bos) is not None:
        tok.bos_id = tok.token_id(bos)
    if eos and tok.token_id(eos) is not None:
        tok.eos_id = tok.token_id(eos)
    tok.legacy = config.get("legacy")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    origin = folder / "tokenizer_config.json"
    if template is None and (folder / "chat_template.jinja").is_file():
        origin = folder / "chat_template.jinja"
        template = origin.read_text(encoding="utf-8")
    if template is not None and not isinstance(template, str):
        raise SourceError(f"chat_template must be a string, not {type(template).__name__}", path=str(origin))
    tok.chat_template, tok.chat_template_origin = template, str(origin)
    tok.source = str(folder)
    return tok


# ---------------------------------------------------------------- GGUF vocabulary

def _field(reader, key: str, default=None):
    value = reader.fields.get(key)
    return default if value is None else value


def sentencepiece_from_vocab(tokens: list[str], scores: list[float], types: list[int], *, unk_id: int = 0,
                             bos_id: int = -1, eos_id: int = -1, pad_id: int = -1,
                             add_dummy_prefix: bool = True) -> spm.SentencePieceProcessor:
    """A SentencePiece BPE model with exactly these pieces (llama.cpp's 'llama' vocabulary)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    for text, score, kind in zip(tokens, scores, types):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, float(score), int(kind) if int(kind) in range(1, 7) else NORMAL
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = any(int(k) == BYTE for k in types)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = unk_id, bos_id, eos_id, pad_id
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = add_dummy_prefix
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    sp = spm.SentencePieceProcessor()
    sp.load_from_serialized_proto(proto.SerializeToString())
    return sp


# llama.cpp's pre-tokenizer names -> a `tokenizers` pre-tokenizer for the byte-level BPE.
def _pre_tokenizer(pre: str):
    from tokenizers import pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=True)
    table = {
        "starcoder": lambda: pt.Sequence([pt.Digits(individual_digits=True), byte_level]),
        "refact": lambda: pt.Sequence([pt.Digits(individual_digits=True), byte_level]),
        "gpt-2": lambda: byte_level,
        "default": lambda: byte_level,
    }
    if pre not in table:
        raise GGUFError(f"no tokenizer for the GGUF pre-tokenizer {pre!r}; known: {', '.join(table)}")
    return table[pre]()


def bpe_from_vocab(tokens: list[str], merges: list[str], types: list[int], *, pre: str = "default"):
    """A `tokenizers` byte-level BPE with these tokens and merges (llama.cpp's 'gpt2' vocabulary)."""
    from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models

    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if int(k) in (CONTROL, USER_DEFINED)])
    return tok


@functools.lru_cache(maxsize=8)
def _gguf_tokenizer_fields(path: str, size: int, mtime_ns: int) -> dict:
    """The tokenizer.* keys of a GGUF file (cached: reading a 32k-token vocabulary takes a second)."""
    from modelpack.gguf_info import read_gguf

    reader = read_gguf(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


class _Fields:
    def __init__(self, fields: dict) -> None:
        self.fields = fields


def load_gguf_tokenizer(path: str | Path, *, added: dict[str, int] | None = None) -> Tokenizer:
    """The tokenizer described by a GGUF file's tokenizer.ggml.* keys."""
    st = Path(path).stat()
    reader = _Fields(_gguf_tokenizer_fields(str(Path(path).resolve()), st.st_size, st.st_mtime_ns))
    model = _field(reader, "tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise GGUFError("the GGUF has no tokenizer vocabulary (tokenizer.ggml.model/tokens)", path=str(path))
    types = _field(reader, "tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    if model == "llama":
        scores = _field(reader, "tokenizer.ggml.scores") or [0.0] * len(tokens)
        sp = sentencepiece_from_vocab(
            tokens, scores, types, unk_id=_field(reader, "tokenizer.ggml.unknown_token_id", 0),
            bos_id=-1 if bos is None else bos, eos_id=-1 if eos is None else eos,
            add_dummy_prefix=_field(reader, "tokenizer.ggml.add_space_prefix", True))
        tok = from_sentencepiece(sp, source=str(path), added=added,
                                 add_bos=_field(reader, "tokenizer.ggml.add_bos_token", True))
        # SentencePiece finds BOS/EOS by the names <s> and </s>; Gemma's are <bos> and <eos>
        tok.bos_id = bos if bos is not None else tok.bos_id
        tok.eos_id = eos if eos is not None else tok.eos_id
    elif model == "gpt2":
        hf = bpe_from_vocab(tokens, _field(reader, "tokenizer.ggml.merges") or [], types,
                            pre=_field(reader, "tokenizer.ggml.pre", "default"))
        tok = from_hf_tokenizer(hf, source=str(path), added=added,
                                add_bos=_field(reader, "tokenizer.ggml.add_bos_token", False))
        tok.bos_id, tok.eos_id = bos, eos
    else:
        raise GGUFError(f"tokenizer model {model!r} is not supported (llama and gpt2 are)", path=str(path))
    tok.chat_template = _field(reader, "tokenizer.chat_template")
    tok.chat_template_origin = f"{path} (tokenizer.chat_template)"
    return tok


def load_tokenizer(path: str | Path, *, added: dict[str, int] | None = None) -> Tokenizer:
    """Any tokenizer source: .model, tokenizer.json, .gguf, or a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        return load_checkpoint_tokenizer(path)
    if not path.is_file():
        raise SourceError("tokenizer not found", path=str(path))
    if path.suffix == ".gguf":
        return load_gguf_tokenizer(path, added=added)
    if path.suffix == ".json":
        return load_tokenizer_json(path, added=added)
    return load_sentencepiece(path, added=added)
