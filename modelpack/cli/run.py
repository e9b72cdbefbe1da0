"""`modelpack run REF "prompt"`: try a built bundle in llama.cpp (needs the llama extra)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from modelpack.cli._app import JsonOpt, app, emit_json


@app.command("run")
def run_command(
    ref: Annotated[str, typer.Argument(help="A model in the store, e.g. openchat-3.5-0106:q4_k_m.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Most tokens to generate (default: the bundle's num_predict; Ollama's -1 = until the context is full).")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="Override the bundle's temperature (0: greedy).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for llama.cpp.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Complete PROMPT with a bundle in llama.cpp, using its template, system prompt and stop params."""
    from modelpack.llamacpp import run

    result = run(ref, prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, n_threads=threads)
    if json_out:
        emit_json(result)
    else:
        typer.echo(result["completion"])
