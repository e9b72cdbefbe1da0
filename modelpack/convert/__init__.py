"""Hugging Face safetensors checkpoint -> GGUF, byte-identical to llama.cpp's convert_hf_to_gguf.py
(float outtypes) and to convert + llama-quantize (quant mixes, straight from the safetensors).

    convert(source, output, ...)      a file on disk (temp name, renamed when complete)
    write_gguf(checkpoint, fout, ...) into an open binary stream (write-only, no seeks)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gguf

from modelpack.checkpoint import Checkpoint, open_checkpoint
from modelpack.convert.arch import ARCHITECTURES, Arch, register, supported
from modelpack.convert.plan import build_plan
from modelpack.convert.writer import write_plan
from modelpack.errors import OutputExistsError
from modelpack.fsutil import atomic_write
from modelpack.progress import Progress

__all__ = ["convert", "write_gguf", "ConvertResult", "GGUFSummary", "ARCHITECTURES", "Arch", "register",
           "supported", "open_checkpoint"]


@dataclass
class GGUFSummary:
    architecture: str  # GGUF architecture name, e.g. "llama"
    parameter_count: int
    file_type: str  # "BF16", "F16", "F32", "Q8_0", or the mix name, e.g. "Q4_K_M"
    file_type_id: int  # general.file_type
    n_tensors: int
    size: int  # bytes written
    context_length: int | None = None
    vocab_size: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    chat_template: str | None = None
    size_label: str | None = None  # e.g. "7.2B"


@dataclass
class ConvertResult:
    path: Path
    file_type: str
    n_tensors: int
    size: int
    sha256: str
    summary: GGUFSummary


def _kv(writer: gguf.GGUFWriter, key: str):
    v = writer.kv_data[0].get(key)
    return None if v is None else v.value


def write_gguf(checkpoint: Checkpoint, fout: BinaryIO, *, outtype: str = "auto", quant: str | None = None,
               allow_nonfinite: bool = False, device: str = "auto", threads: int | None = None,
               progress: Progress | None = None, extra_kv: dict[str, Any] | None = None) -> GGUFSummary:
    """Write `checkpoint` as GGUF into `fout` (only write/flush are used). Raises before writing
    anything for input errors; a NaN/Inf weight is found while streaming."""
    plan = build_plan(checkpoint, outtype=outtype, quant=quant, extra_kv=extra_kv)
    arch = plan.arch.name
    w = plan.writer
    tokens = _kv(w, gguf.Keys.Tokenizer.LIST)
    summary = GGUFSummary(
        architecture=arch, parameter_count=plan.n_params, file_type=plan.file_type_name,
        file_type_id=plan.file_type, n_tensors=len(plan.tensors), size=0,
        context_length=_kv(w, gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch)),
        vocab_size=len(tokens) if tokens is not None else None,
        bos_token_id=_kv(w, gguf.Keys.Tokenizer.BOS_ID), eos_token_id=_kv(w, gguf.Keys.Tokenizer.EOS_ID),
        chat_template=_kv(w, gguf.Keys.Tokenizer.CHAT_TEMPLATE),
        size_label=gguf.size_label(plan.n_params, plan.n_params, 0, 0) if plan.n_params else None,
    )
    summary.size = write_plan(plan, fout, allow_nonfinite=allow_nonfinite, device=device, threads=threads,
                              progress=progress)
    return summary


class _HashingWriter:
    """Writes through and hashes on a second thread (hashlib drops the GIL), one chunk behind."""

    def __init__(self, fout: BinaryIO) -> None:
        self.fout, self._hash = fout, hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelpack-sha256")
        self._pending: Future | None = None

    def write(self, data) -> int:
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self._hash.update, data)  # chunks are never reused by the writer
        return self.fout.write(data)

    def flush(self) -> None:
        self.fout.flush()

    def hexdigest(self) -> str:
        if self._pending is not None:
            self._pending.result()
        self._pool.shutdown()
        return self._hash.hexdigest()


def convert(source: str | os.PathLike, output: str | os.PathLike, *, outtype: str = "auto",
            quant: str | None = None, force: bool = False, allow_nonfinite: bool = False,
            device: str = "auto", threads: int | None = None, progress: Progress | None = None) -> ConvertResult:
    """Convert a checkpoint folder or Hub repo id to a GGUF file at `output`."""
    output = Path(output)
    if output.is_dir():
        raise OutputExistsError("output is a directory", path=str(output))
    if output.exists() and not force:
        raise OutputExistsError("output exists (use --force to overwrite)", path=str(output))
    checkpoint = open_checkpoint(source)
    with contextlib.closing(checkpoint), atomic_write(output) as f:
        hashing = _HashingWriter(f)
        try:
            summary = write_gguf(checkpoint, hashing, outtype=outtype, quant=quant, allow_nonfinite=allow_nonfinite,
                                 device=device, threads=threads, progress=progress)
        finally:
            sha256 = hashing.hexdigest()
    return ConvertResult(path=output, file_type=summary.file_type, n_tensors=summary.n_tensors, size=summary.size,
                         sha256=sha256, summary=summary)
