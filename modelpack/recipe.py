"""What to build (Recipe) and Ollama's Modelfile grammar.

The grammar follows Ollama's parser/parser.go:
  * an instruction is a word of letters, case-insensitive, then a space or tab;
  * `#` at the start of a line (after blanks) begins a comment;
  * the value is the rest of the line, trimmed; a value that starts with `"` or `\"\"\"`
    continues over further lines until, at the end of some line, it ends with the same quote;
    there are no escapes inside quotes;
  * PARAMETER values are typed by the parameter's Go type in Ollama's api.Options and Runner;
    `stop` accumulates, any other parameter keeps its last value;
  * MESSAGE takes a role (system, user or assistant) and the content.
Every error names the file and line.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.bundle import Float32
from modelpack.errors import ModelfileError

INSTRUCTIONS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
                "parameter", "message", "requires")
MESSAGE_ROLES = ("system", "user", "assistant")

# Ollama's typed options (api/types.go: Options with the embedded Runner), json name -> Go kind.
PARAMETER_TYPES: dict[str, str] = {
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int",
    "use_mmap": "bool", "num_thread": "int",
    "num_keep": "int", "seed": "int", "num_predict": "int", "top_k": "int",
    "top_p": "float32", "min_p": "float32", "typical_p": "float32", "repeat_last_n": "int",
    "temperature": "float32", "repeat_penalty": "float32", "presence_penalty": "float32",
    "frequency_penalty": "float32", "stop": "[]string",
}
# Ollama warns about these and drops them (parser.deprecatedParameters).
DEPRECATED_PARAMETERS = ("penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only",
                         "use_mlock", "mirostat", "mirostat_tau", "mirostat_eta")

_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEMVER_RE = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_FLOAT32_MAX = 3.4028234663852886e38
_NEWLINE_RE = re.compile(r"\r\n|\r|\n")


@dataclass
class Recipe:
    """Everything a build needs besides the weights themselves."""

    source: str | None = None  # FROM: catalogue name, Hub repo, folder, .gguf, or store ref
    source_line: int | None = None
    base_dir: Path | None = None  # a Modelfile's folder: relative FROM paths start here
    path: str | None = None  # the Modelfile, for error messages
    quant: str | None = None
    template: str | None = None  # Go template (Ollama's TEMPLATE)
    template_line: int | None = None  # the Modelfile line where TEMPLATE's value starts
    jinja_template: str | None = None  # embedded as tokenizer.chat_template
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)  # texts, one layer each
    license_ids: list[str] = field(default_factory=list)  # SPDX ids (ModelPack, general.license)
    messages: list[tuple[str, str]] = field(default_factory=list)
    requires: str | None = None
    renderer: str | None = None
    parser: str | None = None
    warnings: list[str] = field(default_factory=list)


# ---- values ----------------------------------------------------------------------------------
def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def _kept(ch: str) -> bool:
    # Ollama keeps only printable runes (Go's strconv.IsPrint), plus blanks and newlines
    # inside a value.
    if ch in " \t\r\n":
        return True
    cat = unicodedata.category(ch)
    return not (cat[0] == "C" or cat in ("Zl", "Zp") or (cat == "Zs" and ch != " "))


def _clean(text: str) -> str:
    return text if text.isprintable() else "".join(ch for ch in text if _kept(ch))


def parse_parameter(name: str, value: str, *, path: str | None = None, line: int | None = None) -> Any:
    """One PARAMETER value, typed as Ollama types it (Float32 for Go float32)."""
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        known = ", ".join(sorted(PARAMETER_TYPES))
        raise ModelfileError(f"unknown parameter {name!r} (known: {known})", path=path, line=line)

    def bad(what: str) -> ModelfileError:
        return ModelfileError(f"PARAMETER {name}: invalid {what} value {value!r}", path=path, line=line)

    if kind == "int":
        if not _INT_RE.fullmatch(value):
            raise bad("int")
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise bad("int")
        return number
    if kind == "float32":
        if not _FLOAT_RE.fullmatch(value):
            raise bad("float")
        number = float(value)
        if abs(number) > _FLOAT32_MAX:
            raise bad("float")
        return Float32(number)
    if kind == "bool":
        if value not in _GO_BOOL:
            raise bad("bool")
        return _GO_BOOL[value]
    return [value]  # []string


def coerce_parameter(name: str, value: Any) -> Any:
    """A parameter given as a Python value (catalogue TOML, JSON) typed as Ollama types it;
    names Ollama does not type are passed through unchanged (e.g. from an older bundle)."""
    if name not in PARAMETER_TYPES:
        return value
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] if PARAMETER_TYPES.get(name) == "[]string" else coerce_parameter(name, value[0])
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, float) and PARAMETER_TYPES.get(name) == "int" and value.is_integer():
        value = str(int(value))
    return parse_parameter(name, str(value))


def coerce_params(params: dict[str, Any]) -> dict[str, Any]:
    return {name: coerce_parameter(name, value) for name, value in params.items()}


def add_parameter(params: dict[str, Any], name: str, value: Any) -> None:
    """stop accumulates; every other parameter keeps its last value."""
    if isinstance(value, list) and isinstance(params.get(name), list):
        params[name] = params[name] + value
    else:
        params[name] = value


# ---- the parser -----------------------------------------------------------------------------
def parse_modelfile(text: str, *, path: str | None = None, require_from: bool = True) -> Recipe:
    """Parse Modelfile text into a Recipe; ModelfileError names path:line on any problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    # (line text, the newline that ended it) for every line
    pieces = _NEWLINE_RE.split(text)
    endings = _NEWLINE_RE.findall(text) + [""]
    recipe = Recipe(path=path, base_dir=Path(path).resolve().parent if path else None)
    i = 0
    while i < len(pieces):
        lineno, line = i + 1, pieces[i]
        i += 1
        stripped = line.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        m = re.match(r"([A-Za-z]+)([ \t]|$)", stripped)
        if not m or not m.group(2):
            word = re.match(r"\S*", stripped).group(0)
            raise ModelfileError(
                f"unknown instruction {word!r}: expected one of {', '.join(w.upper() for w in INSTRUCTIONS)}"
                if not m or m.group(1).lower() not in INSTRUCTIONS
                else f"{m.group(1).upper()} needs a value",
                path=path, line=lineno,
            )
        command = m.group(1).lower()
        if command not in INSTRUCTIONS:
            raise ModelfileError(
                f"unknown instruction {m.group(1)!r}: expected one of {', '.join(w.upper() for w in INSTRUCTIONS)}",
                path=path, line=lineno,
            )
        rest = stripped[m.end():]
        arg = None
        if command in ("parameter", "message"):
            what = "parameter name" if command == "parameter" else "role"
            pattern = r"([A-Za-z0-9_]+)[ \t]" if command == "parameter" else r"([A-Za-z]+)[ \t]"
            rest = rest.lstrip(" \t")
            am = re.match(pattern, rest)
            if not am:
                raise ModelfileError(f"{command.upper()} needs a {what} and a value", path=path, line=lineno)
            arg, rest = am.group(1), rest[am.end():]
        # the value: this line, plus following lines while a quote is open
        buf = rest
        while True:
            value, ok = _unquote(buf.strip(" \t\r\n\v\f"))
            if ok:
                break
            if i >= len(pieces):
                raise ModelfileError(f"{command.upper()}: unterminated quote (opened here)", path=path, line=lineno)
            buf += endings[i - 1] + pieces[i]
            i += 1
        _apply(recipe, command, arg, _clean(value), path=path, line=lineno)
    if require_from and recipe.source is None:
        raise ModelfileError("no FROM line", path=path)
    return recipe


def _apply(recipe: Recipe, command: str, arg: str | None, value: str, *, path, line) -> None:
    if command == "from":
        if not value:
            raise ModelfileError("FROM needs a model, a file or a folder", path=path, line=line)
        if recipe.source is not None:
            raise ModelfileError(f"second FROM (the first is on line {recipe.source_line})", path=path, line=line)
        recipe.source, recipe.source_line = value, line
    elif command == "template":
        if not value.strip():
            raise ModelfileError("TEMPLATE is empty: every prompt would render as nothing (remove the line to keep "
                                 "the base model's template)", path=path, line=line)
        recipe.template, recipe.template_line = value, line
    elif command == "system":
        recipe.system = value
    elif command == "license":
        recipe.licenses.append(value)
    elif command == "message":
        role = arg.lower()
        if role not in MESSAGE_ROLES:
            raise ModelfileError(f"MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}, not {arg!r}",
                                 path=path, line=line)
        recipe.messages.append((role, value))
    elif command == "parameter":
        name = arg.lower()
        if name in DEPRECATED_PARAMETERS:
            recipe.warnings.append(f"{path or 'Modelfile'}:{line}: parameter {name} is deprecated and ignored")
            return
        add_parameter(recipe.params, name, parse_parameter(name, value, path=path, line=line))
    elif command == "requires":
        if not _SEMVER_RE.fullmatch(value):
            raise ModelfileError(f"REQUIRES must be a semantic version such as 0.14.0, not {value!r}",
                                 path=path, line=line)
        recipe.requires = value.removeprefix("v")
    elif command in ("renderer", "parser"):
        setattr(recipe, command, value)
    elif command == "adapter":
        raise ModelfileError("ADAPTER (LoRA adapters) is not supported by modelpack; merge the adapter into "
                             "the weights first", path=path, line=line)
    elif command == "draft":
        raise ModelfileError("DRAFT (a draft model for speculative decoding) is not supported by modelpack",
                             path=path, line=line)


def load_modelfile(path: str | Path) -> Recipe:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ModelfileError(f"cannot read Modelfile: {err.strerror}", path=str(p)) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise ModelfileError("not UTF-8 text", path=str(p), line=line) from None
    return parse_modelfile(text, path=str(p))


# ---- writing ----------------------------------------------------------------------------------
def quote(value: str) -> str:
    """Quote a value so that parse_modelfile reads it back unchanged."""
    needs = ("\n" in value or "\r" in value or value != value.strip(" \t\r\n\v\f") or value.startswith('"')
             or value == "")
    if not needs:
        return value
    if '"' not in value and "\n" not in value and "\r" not in value:
        return f'"{value}"'
    return f'"""{value}"""'


def format_parameter_value(value: Any) -> str:
    from modelpack.bundle import go_json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_json(value)
    return str(value)


def to_modelfile(recipe: Recipe, *, source: str | None = None, header: str | None = None) -> str:
    """A Modelfile that rebuilds `recipe` (FROM `source`, or the recipe's own)."""
    out = []
    if header:
        out.extend(f"# {h}" for h in header.splitlines())
        out.append("")
    out.append(f"FROM {source or recipe.source}")
    if recipe.template is not None:
        out.append(f"TEMPLATE {quote(recipe.template)}")
    if recipe.system is not None:
        out.append(f"SYSTEM {quote(recipe.system)}")
    for name in sorted(recipe.params):
        value = recipe.params[name]
        for v in value if isinstance(value, list) else [value]:
            out.append(f"PARAMETER {name} {quote(format_parameter_value(v))}")
    for role, content in recipe.messages:
        out.append(f"MESSAGE {role} {quote(content)}")
    for text in recipe.licenses:
        out.append(f"LICENSE {quote(text)}")
    if recipe.requires:
        out.append(f"REQUIRES {recipe.requires}")
    if recipe.renderer:
        out.append(f"RENDERER {quote(recipe.renderer)}")
    if recipe.parser:
        out.append(f"PARSER {quote(recipe.parser)}")
    return "\n".join(out) + "\n"
