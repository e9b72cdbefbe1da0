"""modelpack: package open LLMs as GGUF bundles that Ollama runs and OCI registries store.

The public API is a handful of plain functions with keyword arguments; the CLI
(`modelpack.cli`) is a thin wrapper around them.
"""

__version__ = "0.1.0"
