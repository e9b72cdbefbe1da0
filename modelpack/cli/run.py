"""CLI commands for the run area (thin wrappers over library functions)."""

from __future__ import annotations

from modelpack.cli._app import app  # noqa: F401
