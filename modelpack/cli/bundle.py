"""CLI commands for the bundle area: build, list, show, rm, cp, export (thin wrappers)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Optional

import typer

from modelpack.cli._app import DeviceOpt, ForceOpt, JsonOpt, QuietOpt, app, emit_json, progress_for


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


@app.command("build")
def build_cmd(
    source: Annotated[Optional[str], typer.Argument(
        help="Catalogue name, Modelfile, checkpoint folder, Hub repo id, .gguf file or a model in the store. "
             "With -f: the name to tag.")] = None,
    quant: Annotated[Optional[str], typer.Option("--quant", help="Quantization, e.g. Q4_K_M, Q8_0.")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", "-t", help="Name to tag: [host/][namespace/]model[:tag].")] = None,
    modelfile: Annotated[Optional[str], typer.Option("-f", "--file", help="Build from this Modelfile.")] = None,
    format: Annotated[str, typer.Option("--format", help="Bundle format: ollama or modelpack (CNCF).")] = "ollama",
    from_dir: Annotated[Optional[str], typer.Option("--from", help="Local checkpoint folder for a catalogue model.")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Tag even if template verification fails.")] = False,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Build a bundle (GGUF + template + params + license) and tag it in the local store."""
    from modelpack.build import build

    result = build(source, quant=quant, tag=tag, modelfile=modelfile, format=format, from_dir=from_dir,
                   verify=not no_verify, force=force, device=device, progress=progress_for(quiet, json_out))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if json_out:
        emit_json(result.to_dict())
    elif not quiet:
        print(f"built {result.ref.short} {result.digest} ({_size(result.size)}, {len(result.layers)} layers)")


@app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """List the models in the local store."""
    from modelpack.store import Store

    entries = sorted(Store().list(), key=lambda e: -e.modified)
    if json_out:
        emit_json([{"name": e.ref.short, "ref": str(e.ref), "digest": e.digest, "size": e.size,
                    "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.modified))} for e in entries])
        return
    rows = [(e.ref.short, e.digest[7:19], _size(e.size), time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified)))
            for e in entries]
    header = ("NAME", "ID", "SIZE", "MODIFIED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="Model in the store.")],
    modelfile: Annotated[bool, typer.Option("--modelfile", help="Print a Modelfile that rebuilds it.")] = False,
    template: Annotated[bool, typer.Option("--template", help="Print the (Go) template.")] = False,
    params: Annotated[bool, typer.Option("--params", "--parameters", help="Print the parameters.")] = False,
    license: Annotated[bool, typer.Option("--license", help="Print the license text(s).")] = False,
    system: Annotated[bool, typer.Option("--system", help="Print the system prompt.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show a model's template, parameters, license, or everything."""
    from modelpack.bundle import read_bundle
    from modelpack.store import Store

    store = Store()
    content = read_bundle(store, ref)
    if json_out:
        emit_json(_show_dict(store, content))
    elif modelfile:
        sys.stdout.write(_modelfile(store, content))
    elif template:
        sys.stdout.write((content.template or "") + "\n")
    elif params:
        sys.stdout.write(_params_text(content.params))
    elif license:
        sys.stdout.write("\n\n".join(content.licenses) + "\n")
    elif system:
        sys.stdout.write((content.system or "") + "\n")
    else:
        sys.stdout.write(_summary(content))


def _params_text(params: dict) -> str:
    import json

    from modelpack.recipe import format_parameter_value

    lines = []
    for name in sorted(params):
        values = params[name] if isinstance(params[name], list) else [params[name]]
        for v in values:
            text = json.dumps(v, ensure_ascii=False) if isinstance(v, str) else format_parameter_value(v)
            lines.append(f"{name:<30} {text}")
    return "".join(line + "\n" for line in lines)


def _modelfile(store, content) -> str:
    from modelpack.recipe import Recipe, to_modelfile

    cfg = content.config if content.format == "ollama" else {}
    recipe = Recipe(template=content.template, system=content.system, params=dict(content.params),
                    licenses=list(content.licenses), messages=list(content.messages),
                    requires=cfg.get("requires") or None, renderer=cfg.get("renderer") or None,
                    parser=cfg.get("parser") or None)
    source = str(store.blob_path(content.model.digest)) if content.model else content.ref.short
    header = (f"Modelfile generated by \"modelpack show\"\nTo build a new Modelfile based on this one, "
              f"replace the FROM line with:\nFROM {content.ref.short}")
    return to_modelfile(recipe, source=source, header=header)


def _show_dict(store, content) -> dict:
    from modelpack.bundle import go_json, manifest_size
    import json

    return {"ref": str(content.ref), "name": content.ref.short, "format": content.format,
            "digest": store.manifest_digest(content.ref), "size": manifest_size(content.manifest),
            "manifest": content.manifest, "config": content.config,
            "template": content.template, "jinja_template": content.jinja_template, "system": content.system,
            "parameters": json.loads(go_json(content.params)), "licenses": content.licenses,
            "license_ids": content.license_ids,
            "messages": [{"role": r, "content": c} for r, c in content.messages],
            "modelfile": _modelfile(store, content)}


def _summary(content) -> str:
    cfg = content.config
    if content.format == "modelpack":
        facts = [("architecture", (cfg.get("descriptor") or {}).get("family", "")),
                 ("parameters", (cfg.get("config") or {}).get("paramSize", "")),
                 ("quantization", (cfg.get("config") or {}).get("quantization", "")),
                 ("licenses", ", ".join(content.license_ids))]
    else:
        facts = [("architecture", cfg.get("model_family", "")), ("parameters", cfg.get("model_type", "")),
                 ("quantization", cfg.get("file_type", ""))]
    facts.append(("format", content.format))
    out = ["  Model"] + [f"    {k:<20}{v}" for k, v in facts if v]
    if content.params:
        out += ["", "  Parameters"] + ["    " + line for line in _params_text(content.params).splitlines()]
    if content.system:
        out += ["", "  System", "    " + content.system.splitlines()[0]]
    if content.licenses:
        out += ["", "  License"] + ["    " + (t.strip().splitlines() or [""])[0] for t in content.licenses]
    return "\n".join(out) + "\n"


@app.command("rm")
def rm_cmd(refs: Annotated[list[str], typer.Argument(help="Models to remove.")], json_out: JsonOpt = False) -> None:
    """Remove models; blobs no other model uses are deleted."""
    from modelpack.names import parse_ref
    from modelpack.store import Store

    store = Store()
    parsed = [parse_ref(r) for r in refs]
    removed = []
    for ref in parsed:
        removed += store.remove(ref)
        if not json_out:
            print(f"deleted {ref.short}")
    if json_out:
        emit_json({"removed": [str(r) for r in parsed], "blobs_deleted": removed})


@app.command("cp")
def cp_cmd(src: Annotated[str, typer.Argument(help="Existing model.")],
           dst: Annotated[str, typer.Argument(help="New name.")], json_out: JsonOpt = False) -> None:
    """Copy a model to a new name (the blobs are shared)."""
    from modelpack.names import parse_ref
    from modelpack.store import Store

    s, d = parse_ref(src), parse_ref(dst)
    digest = Store().copy(s, d)
    if json_out:
        emit_json({"source": str(s), "destination": str(d), "digest": digest})
    else:
        print(f"copied {s.short} to {d.short}")


@app.command("export")
def export_cmd(
    ref: Annotated[str, typer.Argument(help="Model in the store.")],
    directory: Annotated[Optional[str], typer.Argument(help="Output folder for --format oci.")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="oci: an OCI image layout in DIRECTORY.")] = None,
    gguf: Annotated[Optional[str], typer.Option("--gguf", help="Write the model's GGUF to this path.")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="Tag inside the OCI layout (default: the model's).")] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a model as an OCI image layout (skopeo/oras/crane can copy it) or as a GGUF file."""
    from modelpack.errors import InputError
    from modelpack.export import export_gguf, export_oci

    if gguf is not None:
        if format is not None or directory is not None:
            raise InputError("give either --gguf PATH or --format oci DIRECTORY")
        result = export_gguf(ref, gguf, force=force, progress=progress_for(quiet, json_out))
    else:
        if (format or "oci").lower() != "oci":
            raise InputError(f"unknown export format {format!r}; use --format oci DIRECTORY or --gguf PATH")
        if directory is None:
            raise InputError("export --format oci needs an output DIRECTORY")
        result = export_oci(ref, directory, tag=tag)
    if json_out:
        emit_json(result.to_dict())
    elif not quiet:
        where = f"oci:{result.path}:{result.tag}" if result.tag else str(result.path)
        print(f"exported {result.ref.short} to {where} ({result.digest})")
