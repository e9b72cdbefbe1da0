"""Summarise a GGUF file: architecture, parameters, file type, key/values, tensors by type."""

from __future__ import annotations

import collections
import math
import os
import struct
from pathlib import Path
from typing import Any

import gguf

from modelpack.errors import GGUFError

ARRAY_HEAD = 8  # arrays longer than this are summarised as length + first entries
GGUF_MAGIC_BYTES = struct.pack("<I", gguf.GGUF_MAGIC)  # b"GGUF"


def is_gguf(path: str | os.PathLike) -> bool:
    """True when the file starts with the GGUF magic (False when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC_BYTES
    except OSError:
        return False


def file_type_name(file_type: int | None) -> str | None:
    """general.file_type -> "Q4_K_M", "BF16", ... (LlamaFileType without its MOSTLY_/ALL_ prefix)."""
    if file_type is None:
        return None
    try:
        return gguf.LlamaFileType(file_type).name.partition("_")[2]
    except ValueError:
        return f"unknown({file_type})"


def _value(field: gguf.ReaderField) -> Any:
    value = field.contents()
    if isinstance(value, list) and len(value) > ARRAY_HEAD:
        sub = gguf.GGUFValueType(field.types[1]).name if len(field.types) > 1 else None
        return {"array": sub, "length": len(value), "head": value[:ARRAY_HEAD]}
    return value


def read_gguf(path: str | os.PathLike) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except FileNotFoundError as e:
        raise GGUFError("no such file", path=str(path)) from e
    except (ValueError, IndexError, KeyError, OSError) as e:  # bad magic, truncated, unsupported version
        raise GGUFError(f"not a readable GGUF file: {e}", path=str(path)) from e


def inspect_gguf(path: str | os.PathLike) -> dict:
    reader = read_gguf(path)
    kv = {f.name: _value(f) for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    arch = kv.get(gguf.Keys.General.ARCHITECTURE)
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(s) for s in t.shape],
                "n_elements": int(t.n_elements), "nbytes": int(t.n_bytes)} for t in reader.tensors]
    by_type: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "nbytes": 0})
    for t in tensors:
        by_type[t["type"]]["count"] += 1
        by_type[t["type"]]["nbytes"] += t["nbytes"]
    return {
        "path": str(Path(path)),
        "size": Path(path).stat().st_size,
        "architecture": arch,
        "name": kv.get(gguf.Keys.General.NAME),
        "parameter_count": sum(math.prod(t["shape"]) for t in tensors),
        "file_type": file_type_name(kv.get(gguf.Keys.General.FILE_TYPE)),
        "file_type_id": kv.get(gguf.Keys.General.FILE_TYPE),
        "context_length": kv.get(f"{arch}.context_length") if arch else None,
        "n_kv": len(kv),
        "kv": kv,
        "n_tensors": len(tensors),
        "type_histogram": dict(sorted(by_type.items(), key=lambda kv_: -kv_[1]["count"])),
        "tensors": tensors,
    }
