"""CLI commands for the quant area (thin wrappers over library functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from modelpack.cli._app import DeviceOpt, ForceOpt, JsonOpt, QuietOpt, app, emit_json, progress_for


@app.command("quantize")
def quantize_cmd(
    input_gguf: Annotated[Path, typer.Argument(help="An F32/F16/BF16 .gguf file.")],
    output: Annotated[Path, typer.Argument(help="Output .gguf path.")],
    mix: Annotated[str, typer.Argument(help="llama-quantize type: Q4_K_M, Q5_K_M, Q8_0, ... (any case).")],
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="Worker threads (default: all cores).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Requantize a GGUF exactly as llama-quantize does (same bytes)."""
    from modelpack.quant import requantize

    result = requantize(input_gguf, output, mix, force=force, threads=threads, device=device,
                        progress=progress_for(quiet, json_out))
    if json_out:
        emit_json(result)
    elif not quiet:
        print(f"{result['output']}: {result['mix']} (file_type {result['file_type']}), {result['tensors']} tensors, "
              f"{result['bytes_in'] / 2**20:.1f} MiB -> {result['bytes_out'] / 2**20:.1f} MiB "
              f"in {result['seconds']:.1f} s")
