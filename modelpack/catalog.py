"""The model catalogue: templates/<name>.toml read into CatalogEntry objects.

Each entry holds what a bundle needs (repo, license, templates, stop strings, parameters) and what
verify-template needs (tokenizer facts and the reference conversations with published ids).
A long template may live beside the TOML: `jinja_template_file = "x.jinja"` / `go_template_file`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli

from modelpack._data import data_dir
from modelpack.errors import SourceError

CONVENTIONS = ("split-special", "legacy-false", "piecewise")


@dataclass(frozen=True)
class TokenizerFacts:
    kind: str = "sentencepiece"  # "sentencepiece" or "bpe"
    base: str = ""
    bos: str = ""
    eos: str = ""
    eot: str = ""
    add_bos: bool = True
    added_tokens: dict[str, int] = field(default_factory=dict)  # tokens the model adds to its base vocab


@dataclass(frozen=True)
class Reference:
    """A conversation and what the template must turn it into."""

    name: str
    messages: list[dict[str, str]]
    add_generation_prompt: bool = True
    ids: list[int] | None = None  # published token ids (None: not published)
    text: str | None = None  # the published prompt text, without BOS (None: not published)
    convention: str = "split-special"
    variant: str | None = None
    source: str = ""
    go_only: bool = False  # only the Go template has this form (e.g. the card's system-message form)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "messages": self.messages, "add_generation_prompt": self.add_generation_prompt,
                "ids": self.ids, "text": self.text, "convention": self.convention, "variant": self.variant,
                "source": self.source, "go_only": self.go_only}


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    repo: str
    revision: str
    architecture: str
    context_length: int
    license: str
    jinja_template: str
    go_template: str
    stop: list[str]
    parameters: dict[str, Any]
    system: str | None
    variants: dict[str, dict[str, Any]]
    references: list[Reference]
    tokenizer: TokenizerFacts
    description: str = ""
    hf_architecture: str = ""
    notes: str = ""
    training_format: dict[str, Any] | None = None
    path: Path | None = None

    @property
    def bos_token(self) -> str:
        return self.tokenizer.bos

    @property
    def eot_token(self) -> str:
        return self.tokenizer.eot

    @property
    def eos_token(self) -> str:
        return self.tokenizer.eos

    def ollama_params(self) -> dict[str, Any]:
        """Ollama's params layer content: the default parameters plus `stop`."""
        params = dict(self.parameters)
        if self.stop:
            params["stop"] = list(self.stop)
        return params

    def with_variant(self, variant: str | None) -> "CatalogEntry":
        """This entry with a variant's overrides (templates, system, stop, parameters) applied."""
        if not variant:
            return self
        if variant not in self.variants:
            raise SourceError(f"{self.name} has no variant {variant!r}; variants: "
                              f"{', '.join(self.variants) or '(none)'}", path=str(self.path or ""))
        over = {k: v for k, v in self.variants[variant].items() if k in _OVERRIDABLE}
        return replace(self, **over)

    def references_for(self, variant: str | None) -> list[Reference]:
        return [r for r in self.references if (r.variant or None) == (variant or None)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "repo": self.repo, "revision": self.revision,
                "architecture": self.architecture, "hf_architecture": self.hf_architecture,
                "context_length": self.context_length, "license": self.license, "stop": self.stop,
                "parameters": self.parameters, "system": self.system, "variants": sorted(self.variants),
                "tokenizer": vars(self.tokenizer), "references": [r.name for r in self.references],
                "jinja_template": self.jinja_template, "go_template": self.go_template}


_OVERRIDABLE = {"jinja_template", "go_template", "system", "stop", "parameters", "training_format"}
_REQUIRED = ("name", "repo", "architecture", "context_length", "license", "jinja_template", "go_template")


def _template_text(table: dict, key: str, folder: Path, path: Path) -> None:
    """Replace `<key>_file` by the file's text."""
    ref = table.pop(f"{key}_file", None)
    if ref is not None:
        file = folder / ref
        if not file.is_file():
            raise SourceError(f"{key}_file names a missing file {ref!r}", path=str(path))
        table[key] = file.read_text(encoding="utf-8")


def load_entry(path: Path) -> CatalogEntry:
    """Read one catalogue TOML file."""
    path = Path(path)
    try:
        data = tomli.loads(path.read_text(encoding="utf-8"))
    except tomli.TOMLDecodeError as err:
        raise SourceError(f"cannot parse catalogue entry: {err}", path=str(path)) from None
    for key in ("jinja_template", "go_template"):
        _template_text(data, key, path.parent, path)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise SourceError(f"catalogue entry lacks {', '.join(missing)}", path=str(path))
    variants = {}
    for vname, table in data.get("variants", {}).items():
        table = dict(table)
        for key in ("jinja_template", "go_template"):
            _template_text(table, key, path.parent, path)
        variants[vname] = table
    refs = []
    for i, row in enumerate(data.get("reference", [])):
        conv = row.get("convention", "split-special")
        if conv not in CONVENTIONS:
            raise SourceError(f"reference {i} has unknown convention {conv!r}; known: {', '.join(CONVENTIONS)}",
                              path=str(path))
        if row.get("variant") and row["variant"] not in variants:
            raise SourceError(f"reference {row.get('name', i)!r} names unknown variant {row['variant']!r}",
                              path=str(path))
        refs.append(Reference(name=row.get("name", f"reference-{i}"), messages=list(row["messages"]),
                              add_generation_prompt=row.get("add_generation_prompt", True), ids=row.get("ids"),
                              text=row.get("text"), convention=conv, variant=row.get("variant"),
                              source=row.get("source", ""), go_only=row.get("go_only", False)))
    tok = data.get("tokenizer", {})
    return CatalogEntry(
        name=data["name"], repo=data["repo"], revision=data.get("revision", "main"),
        architecture=data["architecture"], context_length=int(data["context_length"]), license=data["license"],
        jinja_template=data["jinja_template"], go_template=data["go_template"], stop=list(data.get("stop", [])),
        parameters=dict(data.get("parameters", {})), system=data.get("system") or None, variants=variants,
        references=refs, tokenizer=TokenizerFacts(**tok), description=data.get("description", ""),
        hf_architecture=data.get("hf_architecture", ""), notes=data.get("notes", ""),
        training_format=data.get("training_format"), path=path)


@functools.lru_cache(maxsize=None)
def _load_all(folder: str) -> dict[str, CatalogEntry]:
    entries = {}
    for path in sorted(Path(folder).glob("*.toml")):
        entry = load_entry(path)
        if entry.name in entries:
            raise SourceError(f"duplicate catalogue name {entry.name!r}", path=str(path))
        entries[entry.name] = entry
    return entries


def list_entries() -> list[CatalogEntry]:
    return list(_load_all(str(data_dir("templates"))).values())


def has_entry(name: str) -> bool:
    return name in _load_all(str(data_dir("templates")))


def get_entry(name: str) -> CatalogEntry:
    """The catalogue entry called `name`; SourceError listing the known names otherwise."""
    entries = _load_all(str(data_dir("templates")))
    if name not in entries:
        raise SourceError(f"unknown catalogue model {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]
