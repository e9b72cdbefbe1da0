"""llama.cpp itself, through the optional extra llama-cpp-python (`pip install modelpack[llama]`).

Two uses: reaching ggml's own C quantizer (`ggml_quantize_chunk`) in the shared library the
llama_cpp package ships, so modelpack's kernels can be checked and timed against it; and loading a
GGUF to evaluate or complete text (`modelpack run`, the llama.cpp proof tests).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import threading
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from modelpack.errors import (GGUFError, MissingExtraError, QuantizationError, TemplateError,
                              UnknownQuantError)

INSTALL_HINT = "pip install 'modelpack[llama]' (llama-cpp-python; it compiles llama.cpp, a few minutes)"

# Shared libraries that may hold the ggml symbols, newest layout first (ggml split into
# ggml-base + backends in 2025; older wheels linked ggml into libllama).
_GGML_LIBRARIES = ("libggml-base", "libggml", "libllama")
_LIB_SUFFIXES = {"linux": ".so", "darwin": ".dylib", "win32": ".dll"}


def library_dir() -> Path:
    """The folder of shared libraries inside the installed llama_cpp package."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        raise MissingExtraError("llama-cpp-python is not installed", hint=INSTALL_HINT)
    lib = Path(spec.origin).parent / "lib"
    if not lib.is_dir():
        raise MissingExtraError("the llama_cpp package has no lib/ folder of shared libraries",
                                path=str(lib), hint=INSTALL_HINT)
    return lib


def _suffix() -> str:
    import sys

    for prefix, suffix in _LIB_SUFFIXES.items():
        if sys.platform.startswith(prefix):
            return suffix
    return ".so"


@lru_cache(maxsize=1)
def ggml_library() -> ctypes.CDLL:
    """The loaded shared library that exports ggml_quantize_chunk, with its prototypes set."""
    lib_dir = library_dir()
    mode = getattr(os, "RTLD_GLOBAL", 0)
    for name in _GGML_LIBRARIES:
        candidates = [lib_dir / f"{name}{_suffix()}", *sorted(lib_dir.glob(f"{name}{_suffix()}.*"))]
        for path in candidates:
            if not path.exists():
                continue
            lib = ctypes.CDLL(str(path), mode=mode)
            if hasattr(lib, "ggml_quantize_chunk"):
                _declare(lib)
                return lib
    raise MissingExtraError("no shared library in llama_cpp exports ggml_quantize_chunk",
                            path=str(lib_dir), hint=INSTALL_HINT)


def _declare(lib: ctypes.CDLL) -> None:
    c_type = ctypes.c_int  # enum ggml_type
    lib.ggml_quantize_chunk.argtypes = [c_type, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [c_type]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_row_size.argtypes = [c_type, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.argtypes = [c_type]
    lib.ggml_blck_size.restype = ctypes.c_int64


def ggml_quantize(data: np.ndarray, qtype: GGMLQuantizationType,
                  imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize float32 rows with llama.cpp's own ggml_quantize_chunk.

    data: [..., n_per_row] float32 (n_per_row a multiple of the type's block size).
    Returns uint8 [..., row_bytes], the bytes llama.cpp writes, blocks in row order (the same shape
    convention as gguf.quants.quantize). imatrix: optional [n_per_row] importance weights.
    """
    qtype = GGMLQuantizationType(qtype)
    if qtype not in GGML_QUANT_SIZES:
        raise UnknownQuantError(f"unknown ggml type {qtype!r}")
    lib = ggml_library()
    arr = np.ascontiguousarray(data, dtype=np.float32)
    if arr.ndim == 0:
        raise QuantizationError("cannot quantize a scalar")
    n_per_row = arr.shape[-1]
    rows = arr.size // n_per_row if n_per_row else 0
    block, _ = GGML_QUANT_SIZES[qtype]
    # ggml aborts the process (GGML_ASSERT) on these, so refuse them here instead.
    if n_per_row % block:
        raise QuantizationError(f"row length {n_per_row} is not a multiple of {qtype.name}'s block size {block}")
    if lib.ggml_blck_size(int(qtype)) != block:
        raise QuantizationError(f"llama.cpp's block size for {qtype.name} differs from gguf's table")
    if imatrix is None and lib.ggml_quantize_requires_imatrix(int(qtype)):
        raise QuantizationError(f"{qtype.name} needs an importance matrix")
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n_per_row,):
            raise QuantizationError(f"imatrix shape {imatrix.shape} != ({n_per_row},)")
    row_bytes = lib.ggml_row_size(int(qtype), n_per_row)
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    if rows:
        written = lib.ggml_quantize_chunk(
            int(qtype), arr.ctypes.data, out.ctypes.data, 0, rows, n_per_row,
            None if imatrix is None else imatrix.ctypes.data)
        if written != out.nbytes:
            raise QuantizationError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}")
    return out.reshape(*arr.shape[:-1], row_bytes)


# ---- models -------------------------------------------------------------------------------------

def _llama_module():
    try:
        import llama_cpp
    except ImportError as err:
        raise MissingExtraError(f"llama-cpp-python is not importable: {err}", hint=INSTALL_HINT) from err
    return llama_cpp


_params_lock = threading.Lock()


@contextlib.contextmanager
def _model_params(llama_cpp: Any, **fields: Any):
    """Set llama_model_params fields that llama_cpp.Llama() does not expose, while it loads."""
    low = llama_cpp.llama_cpp
    original = low.llama_model_default_params
    known = {name for name, _ in original()._fields_}

    def patched():
        params = original()
        for name, value in fields.items():
            if name in known:
                setattr(params, name, value)
        return params

    with _params_lock:
        low.llama_model_default_params = patched
        try:
            yield
        finally:
            low.llama_model_default_params = original


def load_model(gguf_path: str | os.PathLike, *, n_ctx: int = 2048, n_threads: int | None = None,
               logits_all: bool = False, vocab_only: bool = False, seed: int | None = None,
               exact: bool = False, extra_buffer_types: bool | None = None, verbose: bool = False,
               **llama_kwargs: Any) -> Any:
    """A llama_cpp.Llama for one GGUF file (CPU; n_threads defaults to min(4, cores)).

    exact=True keeps the KV cache in F32 and flash attention off (llama.cpp's defaults store K and V
    as F16, about 1e-3 relative), for comparing logits with a reference implementation.
    extra_buffer_types: llama.cpp's repacked/AMX weight buffers for quantized tensors. Off unless
    asked for (or MODELPACK_LLAMA_EXTRA_BUFTS=1): on an AMX-capable VM they crashed
    llama-cpp-python 0.3.36 (SIGSEGV in decode for Q4_0/Q8_0/Q4_K/Q6_K weights, also with files
    llama.cpp quantized itself), and they change only speed, not results.
    """
    if extra_buffer_types is None:
        extra_buffer_types = os.environ.get("MODELPACK_LLAMA_EXTRA_BUFTS", "0") not in ("", "0")
    llama_cpp = _llama_module()
    path = Path(gguf_path)
    if not path.is_file():
        raise GGUFError("no such GGUF file", path=str(path))
    kwargs: dict[str, Any] = dict(
        model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or min(4, os.cpu_count() or 1),
        n_batch=min(512, n_ctx), logits_all=logits_all, vocab_only=vocab_only, n_gpu_layers=0,
        verbose=verbose)
    if seed is not None:
        kwargs["seed"] = seed
    kwargs.update(llama_kwargs)
    if exact:
        kwargs.update(type_k=int(GGMLQuantizationType.F32), type_v=int(GGMLQuantizationType.F32),
                      flash_attn=False)
    try:
        with _model_params(llama_cpp, use_extra_bufts=extra_buffer_types):
            return llama_cpp.Llama(**kwargs)
    except (ValueError, RuntimeError) as err:
        raise GGUFError(f"llama.cpp could not load it: {err}", path=str(path)) from err


def prompt_logits(model: Any, tokens: Sequence[int]) -> np.ndarray:
    """Logits [len(tokens), n_vocab] for one sequence from position 0 (model made with logits_all)."""
    model.reset()
    model.eval(list(tokens))
    return np.array(model.scores[: len(tokens)], dtype=np.float32)


def tokenize(model: Any, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
    """llama.cpp's tokenizer; special=True parses special-token text (llama.cpp's parse_special)."""
    return list(model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))


# ---- running a bundle from the store -------------------------------------------------------------

# Ollama PARAMETER names -> llama-cpp-python create_completion keywords (num_predict and stop are
# handled apart; num_ctx goes to the model).
_SAMPLING_PARAMS = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "typical_p": "typical_p", "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "seed": "seed", "mirostat": "mirostat_mode", "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta", "tfs_z": "tfs_z",
}
# Ollama's defaults for what a bundle's params leave out (api/types.go DefaultOptions).
OLLAMA_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1,
                   "repeat_last_n": 64, "num_predict": -1, "num_ctx": 2048}


@dataclass
class Bundle:
    """What `run` needs from a stored bundle: the GGUF and the Ollama layers around it."""

    ref: str
    gguf: Path
    template: str | None = None  # Ollama Go template
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)


def open_bundle(ref: str, *, home: str | os.PathLike | None = None) -> Bundle:
    """Find REF in the store and read its layers (Ollama format, or CNCF ModelPack weights)."""
    from modelpack.bundle import read_bundle
    from modelpack.gguf_info import is_gguf
    from modelpack.store import Store

    store = Store(home)
    content = read_bundle(store, ref)  # Ollama media types, or ModelPack file paths
    found = Bundle(ref=ref, gguf=Path(), template=content.template, system=content.system,
                   params=content.params, messages=[{"role": r, "content": c} for r, c in content.messages])
    if content.model is not None:
        path = store.blob_path(content.model.digest)
        if content.format == "ollama" or is_gguf(path):
            found.gguf = path
    if found.gguf == Path():
        raise GGUFError(f"bundle {ref} has no GGUF model layer", path=str(store.manifest_path(ref)))
    if not found.gguf.is_file():
        raise GGUFError("the bundle's model blob is missing from the store", path=str(found.gguf))
    return found


def render_prompt(bundle: Bundle, model: Any, prompt: str) -> tuple[str, str]:
    """(text to feed llama.cpp, which template rendered it: "go", "jinja" or "raw").

    The bundle's Go template is what Ollama would use, so it wins; without one (or without the Go
    toolchain to render it) the Jinja chat template the GGUF carries is used.
    """
    from modelpack import templates

    messages = [{"role": m["role"], "content": m["content"]} for m in bundle.messages]
    messages.append({"role": "user", "content": prompt})
    if bundle.template is not None and _go_available():
        return templates.render_go(bundle.template, messages, system=bundle.system), "go"
    jinja = model.metadata.get("tokenizer.chat_template")
    if not jinja:
        return prompt, "raw"
    return templates.render_jinja(jinja, templates.ollama_messages(messages, bundle.system),
                                  bos_token=_token_text(model, model.token_bos()),
                                  eos_token=_token_text(model, model.token_eos())), "jinja"


def _go_available() -> bool:
    from modelpack import templates

    try:
        templates.go_renderer()
    except TemplateError:
        return False
    return True


def _token_text(model: Any, token: int) -> str:
    return "" if token < 0 else model.detokenize([token], special=True).decode("utf-8", "replace")


def run(ref: str, prompt: str, *, max_tokens: int | None = None, temperature: float | None = None,
        seed: int | None = None, n_threads: int | None = None,
        home: str | os.PathLike | None = None) -> dict[str, Any]:
    """Complete `prompt` with the bundle REF, honouring its template, system prompt and params.

    Returns {"model", "gguf", "template", "prompt", "completion", "finish_reason",
    "prompt_tokens", "completion_tokens"}.
    """
    bundle = open_bundle(ref, home=home)
    params = {**OLLAMA_DEFAULTS, **bundle.params}
    model = load_model(bundle.gguf, n_ctx=int(params["num_ctx"]), n_threads=n_threads,
                       last_n_tokens_size=int(params["repeat_last_n"]))
    try:
        text, kind = render_prompt(bundle, model, prompt)
        # A Jinja template writes BOS itself; for Go templates llama.cpp adds it as Ollama's runner does.
        add_bos = kind != "jinja" and bool(model.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true")
        tokens = tokenize(model, text, add_bos=add_bos)
        kwargs = {_SAMPLING_PARAMS[k]: v for k, v in params.items() if k in _SAMPLING_PARAMS}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        stop = params.get("stop") or []
        limit = max_tokens if max_tokens is not None else int(params["num_predict"])
        if limit < 0:  # Ollama's -1: until the context is full
            limit = model.n_ctx() - len(tokens)
        result = model.create_completion(tokens, max_tokens=limit, stop=list(stop) or None, **kwargs)
    finally:
        model.close()
    choice = result["choices"][0]
    return {"model": ref, "gguf": str(bundle.gguf), "template": kind, "prompt": text,
            "completion": choice["text"], "finish_reason": choice.get("finish_reason"),
            "prompt_tokens": len(tokens), "completion_tokens": result["usage"]["completion_tokens"]}
