"""The typer app, the options every command shares, and output helpers.

Command modules (`modelpack/cli/<area>.py`) import `app` and the shared options from here
and register plain annotated functions. They call library functions and print results;
the library itself never prints.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated, Any, Iterator

import typer

app = typer.Typer(
    name="modelpack",
    help="Package open LLMs as GGUF bundles: convert, quantize, verify templates, store, push and pull.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from modelpack import __version__

        typer.echo(f"modelpack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Package open LLMs as GGUF bundles: convert, quantize, verify templates, store, push and pull."""

# Shared options, defined once.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Quantization backend device: auto, cpu or cuda.")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Allow plain http and skip TLS verification.")]


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


class _TqdmTask:
    def __init__(self, bar) -> None:
        self._bar = bar

    def advance(self, n: int = 1) -> None:
        self._bar.update(n)


class TqdmProgress:
    """Progress bars on stderr (tqdm), implementing modelpack.progress.Progress."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str = "B") -> Iterator[_TqdmTask]:
        from tqdm import tqdm

        scale = unit == "B"
        with tqdm(
            total=total,
            desc=description,
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            disable=not self.enabled,
            leave=False,
            file=sys.stderr,
        ) as bar:
            yield _TqdmTask(bar)


def progress_for(quiet: bool = False, json_out: bool = False) -> TqdmProgress:
    return TqdmProgress(enabled=not quiet and not json_out)
