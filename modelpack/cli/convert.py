"""CLI commands for the convert area (thin wrappers over library functions)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from modelpack.cli._app import DeviceOpt, ForceOpt, JsonOpt, QuietOpt, app, emit_json, progress_for


@app.command("convert")
def convert_cmd(
    source: Annotated[str, typer.Argument(help="Checkpoint folder, or Hub repo id org/name (optionally org/name@revision).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .gguf path.")],
    outtype: Annotated[str, typer.Option("--outtype", help="auto, f32, f16, bf16 or q8_0 (as convert_hf_to_gguf.py).")] = "auto",
    quant: Annotated[Optional[str], typer.Option("--quant", help="llama-quantize mix, e.g. Q4_K_M (quantizes straight from the checkpoint).")] = None,
    force: ForceOpt = False,
    allow_nonfinite: Annotated[bool, typer.Option("--allow-nonfinite", help="Convert even if weights hold NaN/Inf.")] = False,
    device: DeviceOpt = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="Worker threads (default: all cores).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a Hugging Face safetensors checkpoint to GGUF (identical to llama.cpp's converter)."""
    from modelpack.convert import convert

    result = convert(source, output, outtype=outtype.lower(), quant=quant, force=force,
                     allow_nonfinite=allow_nonfinite, device=device, threads=threads,
                     progress=progress_for(quiet, json_out))
    s = result.summary
    if json_out:
        emit_json({"path": str(result.path), "architecture": s.architecture, "file_type": result.file_type,
                   "parameter_count": s.parameter_count, "n_tensors": result.n_tensors, "size": result.size,
                   "sha256": result.sha256})
    elif not quiet:
        print(f"{result.path}: {s.architecture} {s.size_label or ''} {result.file_type}, {result.n_tensors} tensors, "
              f"{result.size / 2**20:.1f} MiB, sha256 {result.sha256}")


def _fmt_value(value) -> str:
    if isinstance(value, dict) and "length" in value:
        head = ", ".join(repr(v) for v in value["head"][:4])
        return f"[{value['array']} x {value['length']}: {head}, ...]"
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


@app.command("inspect")
def inspect_cmd(
    file: Annotated[Path, typer.Argument(help="A .gguf file.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a GGUF's architecture, parameters, file type, key/values and tensors."""
    from modelpack.gguf_info import inspect_gguf

    info = inspect_gguf(file)
    if json_out:
        emit_json(info)
        return
    w = sys.stdout.write
    w(f"{info['path']}: {info['architecture']}, {info['parameter_count']:,} parameters, "
      f"file type {info['file_type']}, {info['size']:,} bytes\n\n")
    w(f"key/values ({info['n_kv']}):\n")
    for key, value in info["kv"].items():
        w(f"  {key:<44} {_fmt_value(value)}\n")
    w(f"\ntensors ({info['n_tensors']}):\n")
    for t in info["tensors"]:
        w(f"  {t['name']:<36} {t['type']:<6} {str(t['shape']):<18} {t['nbytes']:>14,}\n")
    w("\ntypes:\n")
    for qtype, h in info["type_histogram"].items():
        w(f"  {qtype:<6} {h['count']:>5} tensors {h['nbytes']:>16,} bytes\n")
