"""Render chat templates: Hugging Face Jinja templates and Ollama Go templates.

Jinja: the same environment transformers uses for apply_chat_template (sandboxed, trim_blocks,
lstrip_blocks, loop controls, raise_exception, tojson, strftime_now).
Go: Go's own text/template, through a small helper built with the Go toolchain (Debian golang-go)
on first use and cached; see modelpack/_gorender.py for the Ollama rules it follows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelpack._gorender import GO_SOURCE
from modelpack.errors import TemplateError

Message = dict[str, Any]


# ---------------------------------------------------------------- Jinja

def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=64)
def _compile_jinja(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise TemplateError(f"Jinja template does not parse: {err.message}", line=err.lineno) from None


def render_jinja(template: str, messages: list[Message], *, bos_token: str = "", eos_token: str = "",
                 add_generation_prompt: bool = True, **extra: Any) -> str:
    """Render a Hugging Face chat template the way transformers' apply_chat_template does."""
    compiled = _compile_jinja(template)
    try:
        return compiled.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt, **extra)
    except jinja2.exceptions.TemplateError as err:
        raise TemplateError(f"Jinja template failed to render: {err}") from None


# ---------------------------------------------------------------- Go

def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "modelpack"


def _go_binary() -> str:
    go = os.environ.get("MODELPACK_GO") or shutil.which("go") or ("/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None)
    if not go:
        raise TemplateError("rendering Ollama Go templates needs the Go toolchain, which is not installed",
                            hint="install it (Debian/Ubuntu: apt-get install golang-go) or set MODELPACK_GO")
    return go


@functools.lru_cache(maxsize=1)
def go_renderer() -> Path:
    """Path to the compiled Go template helper, building it on first use."""
    digest = hashlib.sha256(GO_SOURCE.encode()).hexdigest()[:16]
    folder = _cache_dir() / f"gorender-{digest}"
    exe = folder / "gorender"
    if exe.is_file():
        return exe
    folder.mkdir(parents=True, exist_ok=True)
    go = _go_binary()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        src = Path(tmp) / "main.go"
        src.write_text(GO_SOURCE, encoding="utf-8")
        env = dict(os.environ, GOPROXY="off", GOTOOLCHAIN="local", CGO_ENABLED="0",
                   GO111MODULE="off")
        env.setdefault("GOCACHE", str(_cache_dir() / "gocache"))
        env.setdefault("GOPATH", str(_cache_dir() / "gopath"))
        out = Path(tmp) / "gorender"
        proc = subprocess.run([go, "build", "-o", str(out), str(src)], cwd=tmp, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise TemplateError(f"building the Go template helper failed: {proc.stderr.strip()[:500]}",
                                path=str(src))
        os.replace(out, exe)
    return exe


def ollama_messages(messages: Iterable[Message], system: str | None = None) -> list[Message]:
    """The message list Ollama hands its template: a Modelfile SYSTEM goes first unless the chat has one."""
    msgs = [{"role": m["role"], "content": m.get("content", "")} for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def render_go_many(jobs: list[tuple[str, list[Message], str | None]]) -> list[str]:
    """Render several (template, messages, system) jobs with one run of the helper."""
    payload = [{"template": t, "messages": ollama_messages(m, s)} for t, m, s in jobs]
    proc = subprocess.run([str(go_renderer())], input=json.dumps(payload), capture_output=True, text=True)
    if proc.returncode != 0:
        raise TemplateError(f"Go template helper failed: {proc.stderr.strip()[:500]}")
    results = json.loads(proc.stdout)
    texts = []
    for res in results:
        if "error" in res and res["error"]:
            raise go_error(res["error"])
        texts.append(res["text"])
    return texts


def go_error(text: str) -> TemplateError:
    """Go's `template: :LINE[:COL]: message` as a TemplateError with .line (of the template)."""
    m = re.match(r"(?:template: )?[^:]*:(\d+)(?::\d+)?: (.*)", text, re.S)
    line, message = (int(m.group(1)), m.group(2)) if m else (None, text.removeprefix("template: "))
    message = re.sub(r'executing "[^"]*" at ', "", message).replace("main.Message", "message")
    what = "fails to run" if m and "executing" in text else "does not parse"
    return TemplateError(f"Go template {what}: {message}", line=line)


def render_go(template: str, messages: list[Message], *, system: str | None = None) -> str:
    """Render an Ollama TEMPLATE for a chat, as Ollama does for a /api/chat request."""
    return render_go_many([(template, messages, system)])[0]
