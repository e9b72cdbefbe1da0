"""Command-line entry point: `modelpack COMMAND ...`.

Errors from the library become one line on stderr plus a debug hint, with a non-zero exit.
"""

from __future__ import annotations

import os
import sys

from modelpack.cli._app import app, emit_json
from modelpack.errors import ModelpackError

# Each area registers its commands on `app` when imported.
from modelpack.cli import convert as _convert  # noqa: F401,E402
from modelpack.cli import quant as _quant  # noqa: F401,E402
from modelpack.cli import templates as _templates  # noqa: F401,E402
from modelpack.cli import bundle as _bundle  # noqa: F401,E402
from modelpack.cli import registry as _registry  # noqa: F401,E402
from modelpack.cli import run as _run  # noqa: F401,E402

DEBUG_HINT = "set MODELPACK_DEBUG=1 for the traceback"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by tests)."""
    debug = os.environ.get("MODELPACK_DEBUG") not in (None, "", "0")
    try:
        # With standalone_mode=False click returns the exit code (e.g. 130 after Ctrl-C).
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except ModelpackError as err:
        if debug:
            raise
        if "--json" in (sys.argv[1:] if argv is None else argv):
            # A script asked for JSON: give it the error as JSON too (stderr keeps the human line).
            emit_json({"error": str(err), "type": type(err).__name__, "hint": err.hint,
                       "exit_code": err.exit_code})
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        print(f"({DEBUG_HINT})", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as err:  # click usage errors and the unexpected
        # Typer may vendor its own click, so recognise click's exceptions by class name.
        kinds = {cls.__name__ for cls in type(err).__mro__}
        if "ClickException" in kinds:
            err.show()
            return err.exit_code
        if "Abort" in kinds:
            print("aborted", file=sys.stderr)
            return 1
        if debug:
            raise
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        print(f"({DEBUG_HINT})", file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    sys.exit(main())
