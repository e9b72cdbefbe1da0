"""CLI commands for the templates area: the catalogue and verify-template (thin wrappers)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from modelpack.cli._app import JsonOpt, app, emit_json


@app.command("templates")
def templates_cmd(json_out: JsonOpt = False) -> None:
    """List the model catalogue (templates/*.toml)."""
    from modelpack.catalog import list_entries

    entries = list_entries()
    if json_out:
        emit_json([{k: v for k, v in e.to_dict().items() if k not in ("jinja_template", "go_template")}
                   for e in entries])
        return
    width = max(len(e.name) for e in entries)
    for e in entries:
        variants = f"  variants: {', '.join(e.variants)}" if e.variants else ""
        typer.echo(f"{e.name:<{width}}  {e.repo:<36} {e.architecture:<9} ctx {e.context_length:<5} "
                   f"{e.license:<18}{variants}")


@app.command("show-template")
def show_template_cmd(
    name: Annotated[str, typer.Argument(help="Catalogue name (see `modelpack templates`).")],
    format: Annotated[str, typer.Option("--format", help="jinja or go.")] = "go",
    variant: Annotated[Optional[str], typer.Option("--variant", help="A named variant, e.g. math-correct.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a catalogue entry's Ollama Go TEMPLATE or Hugging Face Jinja chat template."""
    from modelpack.catalog import get_entry
    from modelpack.errors import InputError

    if format not in ("jinja", "go"):
        raise InputError(f"--format must be jinja or go, not {format!r}")
    entry = get_entry(name).with_variant(variant)
    text = entry.jinja_template if format == "jinja" else entry.go_template
    if json_out:
        emit_json({"name": entry.name, "variant": variant, "format": format, "template": text,
                   "stop": entry.stop, "parameters": entry.ollama_params(), "system": entry.system,
                   "license": entry.license})
        return
    typer.echo(text)


@app.command("verify-template")
def verify_template_cmd(
    target: Annotated[str, typer.Argument(help="Catalogue name, checkpoint folder, .gguf, Modelfile or store model.")],
    variant: Annotated[Optional[str], typer.Option("--variant", help="A catalogue variant, e.g. math-correct.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        "--tokenizer", help="Tokenizer for a catalogue name: tokenizer.model, tokenizer.json, .gguf or folder.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Catalogue entry whose references to use (default: the one that fits the tokenizer).")] = None,
    convention: Annotated[Optional[str], typer.Option(
        "--convention", help="Tokenize the Jinja output as split-special or legacy-false.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Render, tokenize and compare a model's chat templates with the published token ids."""
    from modelpack.catalog import CONVENTIONS
    from modelpack.errors import InputError
    from modelpack.verify import verify_template

    if convention is not None and convention not in CONVENTIONS:
        raise InputError(f"--convention must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    report = verify_template(target, variant=variant, tokenizer=tokenizer, model=model, convention=convention)
    if json_out:
        emit_json(report.to_dict())
    else:
        typer.echo(report.format())
    if not report.ok:
        raise SystemExit(1)  # main() turns it into the exit code
