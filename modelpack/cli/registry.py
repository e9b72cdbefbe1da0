"""CLI commands for the registry area: push, pull, login, logout, tags (thin wrappers)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from modelpack.cli._app import InsecureOpt, JsonOpt, QuietOpt, app, emit_json, progress_for

ChunkOpt = Annotated[Optional[int], typer.Option(
    "--chunk-size", help="Bytes per upload PATCH request (default: adaptive, about 2 s of upload each).")]


def _size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n} B"


@app.command("push")
def push_cmd(
    ref: Annotated[str, typer.Argument(help="Local model: host[:port]/namespace/model[:tag][@sha256:<hex>].")],
    dest: Annotated[Optional[str], typer.Argument(help="Remote name, if different from REF.")] = None,
    insecure: InsecureOpt = False,
    chunk_size: ChunkOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Push a model to an OCI registry (resumes an interrupted push)."""
    from modelpack.names import parse_ref
    from modelpack.registry import graceful_interrupt, push

    parse_ref(ref, allow_digest=True)  # both names are validated before any request
    if dest is not None:
        parse_ref(dest, allow_digest=True)
    with graceful_interrupt() as stop:
        result = push(ref, dest, insecure=insecure, chunk_size=chunk_size,
                      progress=progress_for(quiet, json_out), stop=stop)
    if json_out:
        emit_json(result.as_dict())
        return
    for blob in result.blobs:
        if blob.restart_reason:  # confirmed bytes were sent again: say why, whatever --quiet says
            print(f"note: blob {blob.digest[7:19]} started over ({_size_text(blob.resent_bytes)} sent again): "
                  f"{blob.restart_reason}", file=sys.stderr)
    if not quiet:
        skipped = sum(1 for b in result.blobs if b.action in ("exists", "mounted"))
        print(f"pushed {result.ref} {result.manifest_digest} "
              f"({_size_text(result.bytes_sent)} sent, {skipped}/{len(result.blobs)} blobs already there)")


@app.command("pull")
def pull_cmd(
    ref: Annotated[str, typer.Argument(
        help="Remote model: host[:port]/namespace/model[:tag][@sha256:<hex>] (a digest is verified).")],
    insecure: InsecureOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Pull a model from an OCI registry; every blob is sha256-checked before it is stored."""
    from modelpack.names import parse_ref
    from modelpack.registry import pull

    parse_ref(ref, allow_digest=True)
    result = pull(ref, insecure=insecure, progress=progress_for(quiet, json_out))
    if json_out:
        emit_json(result.as_dict())
    elif not quiet:
        print(f"pulled {result.ref} {result.manifest_digest} ({_size_text(result.bytes_received)} received)")


@app.command("login")
def login_cmd(
    host: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[Optional[str], typer.Option("--username", "-u")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    insecure: InsecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Check credentials against a registry and save them (docker config.json format)."""
    from modelpack.registry import login

    if username is None:
        username = typer.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    where = login(host, username, password, insecure=insecure)
    if json_out:
        emit_json({"host": host, "username": username, "stored_in": where})
    else:
        print(f"login succeeded for {username} at {host} (saved in {where})")


@app.command("logout")
def logout_cmd(
    host: Annotated[str, typer.Argument(help="Registry host[:port].")],
    json_out: JsonOpt = False,
) -> None:
    """Forget the saved credentials of a registry."""
    from modelpack.registry import logout

    removed = logout(host)
    if json_out:
        emit_json({"host": host, "removed": removed})
    else:
        print(f"removed credentials for {host}" if removed else f"no credentials saved for {host}")


@app.command("tags")
def tags_cmd(
    ref: Annotated[str, typer.Argument(help="Remote repository: host[:port]/namespace/model.")],
    insecure: InsecureOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """List the tags of a repository on a registry."""
    from modelpack.registry import list_tags

    tags = list_tags(ref, insecure=insecure)
    if json_out:
        emit_json({"ref": ref, "tags": tags})
    else:
        for tag in tags:
            print(tag)
