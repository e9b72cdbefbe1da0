"""gguf.SpecialVocab as llama.cpp's convert_hf_to_gguf.py runs it.

The converter imports the gguf-py that ships beside it, which is newer than the gguf release on PyPI
that we depend on. Its SpecialVocab differs in three ways that change the output, restored here:
- add_{bos,eos,sep}_token from tokenizer.json's post-processor win over tokenizer_config.json's
  (the release lets tokenizer_config.json override them);
- a ByteLevel post-processor means "add no BOS/EOS" unless another processor says otherwise;
- a Lowercase / StripAccents normalizer is recorded as tokenizer.ggml.normalizer.* flags;
- a TemplateProcessing that starts with a special token names the BOS (and CLS) token when
  tokenizer_config.json names none.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import gguf

NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"


class _PostProcessorFlags(dict):
    """add_special_token while the release's loader fills it: the post-processor's values come first and
    tokenizer_config.json may only fill flags they left unset. `soft` flags (ByteLevel's defaults) may
    still be set once by a later post-processor."""

    def __init__(self, soft: set[str]) -> None:
        super().__init__()
        self.soft = soft

    def __setitem__(self, key: str, value: bool) -> None:
        if key in self and key not in self.soft:
            return
        self.soft.discard(key)
        super().__setitem__(key, value)


def _processors(tokenizer: dict) -> list[dict]:
    post = tokenizer.get("post_processor") or {}
    return [p for p in post.get("processors", [post]) if isinstance(p, dict)]


def _template_sets(processor: dict) -> set[str]:
    """The add_* flags that a Roberta / Template post-processor sets (bos and eos only matter here)."""
    kind = processor.get("type")
    if kind == "RobertaProcessing":
        return {"bos", "eos"}
    if kind != "TemplateProcessing" or len(single := processor.get("single", [])) <= 1:
        return set()
    ends = {"bos": single[0], "eos": single[-1]}
    return {typ for typ, item in ends.items() if item.get("SpecialToken", {}).get("id")}


def _normalizer_flags(normalizer: dict | None, flags: dict[str, bool]) -> None:
    if not isinstance(normalizer, dict):
        return
    kind = normalizer.get("type")
    if kind == "Lowercase":
        flags["lowercase"] = True
    elif kind == "StripAccents":
        flags["strip_accents"] = True
    elif kind == "BertNormalizer":
        for key in ("lowercase", "strip_accents"):
            if key in normalizer:
                flags[key] = normalizer[key]
    elif kind == "Sequence":
        for inner in normalizer.get("normalizers", []):
            _normalizer_flags(inner, flags)


def _config_named_by_template(tokenizer: dict, config: dict | None) -> dict | None:
    """tokenizer_config.json with bos_token / cls_token filled in from a TemplateProcessing's leading
    special token where it names neither; None when nothing changes."""
    if not config:
        return None
    config = dict(config)
    bos, cls = config.get("bos_token"), config.get("cls_token")
    bos = bos or cls
    changed = False
    for processor in _processors(tokenizer):
        single = processor.get("single", []) if processor.get("type") == "TemplateProcessing" else []
        first = single[0].get("SpecialToken", {}).get("id") if len(single) > 1 else None
        if first and first not in (bos, cls):
            if not bos:
                config["bos_token"] = bos = first
                changed = True
            if not cls:
                config["cls_token"] = cls = first
                changed = True
    return config if changed else None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class SpecialVocab(gguf.SpecialVocab):
    normalizer: dict[str, bool]

    def _try_load_from_tokenizer_json(self, path: Path) -> bool:
        self.normalizer = {}
        tokenizer_file = path / "tokenizer.json"
        tokenizer = _read_json(tokenizer_file)
        if not tokenizer:
            return super()._try_load_from_tokenizer_json(path)
        processors = _processors(tokenizer)
        set_by_templates = set().union(*(_template_sets(p) for p in processors))
        flags = _PostProcessorFlags(soft=set())
        if any(p.get("type") == "ByteLevel" for p in processors):
            flags.update(bos=False, eos=False)  # dict.update bypasses the first-wins rule
            flags.soft = {"bos", "eos"} & set_by_templates
        self.add_special_token = flags
        try:
            config = _config_named_by_template(tokenizer, _read_json(path / "tokenizer_config.json"))
            if config is None:
                return super()._try_load_from_tokenizer_json(path)
            with tempfile.TemporaryDirectory(prefix="modelpack-vocab-") as tmp:  # the folder, amended config
                for entry in path.iterdir():
                    if entry.name != "tokenizer_config.json":
                        os.symlink(entry.resolve(), Path(tmp) / entry.name)
                (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
                return super()._try_load_from_tokenizer_json(Path(tmp))
        finally:
            self.add_special_token = dict(flags)
            _normalizer_flags(tokenizer.get("normalizer"), self.normalizer)

    def add_to_gguf(self, gw: gguf.GGUFWriter, quiet: bool = False) -> None:
        super().add_to_gguf(gw, quiet=quiet)
        for key, name in ((NORMALIZER_LOWERCASE, "lowercase"), (NORMALIZER_STRIP_ACCENTS, "strip_accents")):
            if (value := getattr(self, "normalizer", {}).get(name)) is not None:
                gw.add_bool(key, value)
