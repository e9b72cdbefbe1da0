"""`modelpack build`: a source -> a tagged bundle in the local store.

SOURCE is a catalogue name, a Modelfile, a checkpoint folder, a Hub repo id, a .gguf file or a
bundle already in the store (whose layers are inherited, as Ollama's FROM does). The GGUF is
written straight into the store's blob writer, so it is hashed as it is written and never
copied. The tag is written last: an interrupted build leaves no tag and no visible blob.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack import bundle
from modelpack.bundle import (GENERATION_KEYS, MP_GENERATION, MP_GO_TEMPLATE, MP_JINJA, MP_MESSAGES, MP_PARAMS,
                              MP_SYSTEM, MP_WEIGHT, BundleContent, Descriptor, read_bundle)
from modelpack.errors import (InputError, ModelfileError, OutputExistsError, SourceError, TemplateError)
from modelpack.gguf_info import file_type_name, is_gguf, read_gguf
from modelpack.names import ModelRef, parse_ref
from modelpack.progress import Progress, or_null
from modelpack.recipe import Recipe, coerce_params, load_modelfile
from modelpack.store import Store, sha256_digest

FORMATS = ("ollama", "modelpack")
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "license.txt")


@dataclass
class BuildResult:
    ref: ModelRef
    digest: str  # sha256 of the manifest bytes
    format: str
    config: Descriptor
    layers: list[Descriptor]
    manifest: bytes = field(repr=False)
    verified: bool | None = None  # None: verification did not run
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.config.size + sum(d.size for d in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": str(self.ref), "name": self.ref.short, "digest": self.digest, "format": self.format,
                "size": self.size, "config": self.config.to_dict(), "layers": [d.to_dict() for d in self.layers],
                "verified": self.verified, "warnings": self.warnings}


@dataclass
class Source:
    kind: str  # catalog | checkpoint | hub | gguf | bundle
    value: str  # catalogue name, folder, repo id, file path or store ref
    name: str  # base model name for the default tag
    entry: Any = None  # CatalogEntry
    ref: ModelRef | None = None


# ---- sources ----------------------------------------------------------------------------------
def safe_name(text: str) -> str:
    """A valid model part from a file or repo name: lowercase, odd characters -> '-'."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.")
    name = re.sub(r"^[^a-z0-9_]+", "", name)[:80]
    return name or "model"


def _catalog_has(name: str) -> bool:
    try:
        from modelpack.catalog import has_entry
    except ImportError:
        return False
    try:
        return has_entry(name)
    except SourceError:
        return False


def resolve_source(text: str, *, store: Store, base_dir: Path | None = None) -> Source:
    """Decide what SOURCE (or a Modelfile's FROM) names: path first, then the store, the
    catalogue and finally the Hub."""
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.exists():
        if path.is_dir():
            return Source("checkpoint", str(path), safe_name(path.resolve().name))
        if is_gguf(path):
            return Source("gguf", str(path), safe_name(path.stem))
        raise SourceError("not a GGUF file nor a checkpoint folder", path=str(path))
    with contextlib.suppress(InputError):
        ref = parse_ref(text)
        if store.has_manifest(ref):
            return Source("bundle", str(ref), ref.model, ref=ref)
    if _catalog_has(text):
        from modelpack.catalog import get_entry

        return Source("catalog", text, safe_name(text), entry=get_entry(text))
    from modelpack.checkpoint import REPO_ID

    if REPO_ID.match(text) and not text.startswith((".", "/", "~")):
        return Source("hub", text, safe_name(text.split("/")[-1].split("@")[0]))
    if text.endswith(".gguf") or "/" in text or text.startswith("."):
        raise SourceError("no such file or folder", path=str(path))
    raise SourceError(f"{text!r} is not a catalogue model, a model in the store, a Hub repo, a folder or a "
                      "GGUF file", hint="`modelpack list` shows the store; catalogue names are the files "
                      "in templates/")


# ---- recipes ------------------------------------------------------------------------------------
def _license_text(license_id: str) -> tuple[str | None, str]:
    """(text or None, SPDX id) for a catalogue license id."""
    from modelpack.licenses import get_license

    lic = get_license(license_id)
    return (lic.text if lic.has_text else None), lic.spdx


def apply_catalog(recipe: Recipe, entry) -> None:
    """Fill what the Modelfile left open from the catalogue entry (the Modelfile wins)."""
    if recipe.template is None:
        recipe.template = entry.go_template
    if recipe.jinja_template is None:
        recipe.jinja_template = entry.jinja_template
    if recipe.system is None and entry.system:
        recipe.system = entry.system
    params = coerce_params(entry.ollama_params())
    params.update(recipe.params)
    recipe.params = params
    text, spdx = _license_text(entry.license)
    if text is not None:
        if text not in recipe.licenses:
            recipe.licenses.insert(0, text)
    else:
        recipe.warnings.append(f"modelpack does not ship the text of license {entry.license}; no license layer")
    if spdx not in recipe.license_ids:
        recipe.license_ids.insert(0, spdx)


def _match_catalog(jinja: str | None):
    """The catalogue entry whose Jinja template is exactly `jinja`, if any."""
    if not jinja:
        return None
    try:
        from modelpack.catalog import list_entries

        for entry in list_entries():
            if entry.jinja_template.strip() == jinja.strip():
                return entry
    except (ImportError, SourceError):
        return None
    return None


def _checkpoint_facts(folder: Path) -> tuple[str | None, str | None, str | None]:
    """(chat template, license text, license id) found in a checkpoint folder."""
    jinja = None
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        with contextlib.suppress(ValueError, OSError):
            value = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(value, str):
                jinja = value
            elif isinstance(value, list):  # named templates: take "default"
                jinja = next((t.get("template") for t in value if t.get("name") == "default"), None)
    if jinja is None and (folder / "chat_template.jinja").is_file():
        jinja = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    text = next(((folder / n).read_text(encoding="utf-8", errors="replace") for n in LICENSE_FILES
                 if (folder / n).is_file()), None)
    license_id = None
    readme = folder / "README.md"
    if readme.is_file():
        m = re.search(r"\A---\s*\n(.*?)\n---", readme.read_text(encoding="utf-8", errors="replace"), re.S)
        if m:
            lm = re.search(r"^license:\s*['\"]?([^\s'\"]+)", m.group(1), re.M)
            license_id = lm.group(1) if lm else None
    return jinja, text, license_id


def apply_found(recipe: Recipe, *, jinja: str | None, license_text: str | None, license_id: str | None) -> None:
    """Fill a recipe from what a folder or GGUF carries, and from a catalogue entry with the
    same chat template when there is one."""
    if recipe.jinja_template is None and jinja:
        recipe.jinja_template = jinja
    entry = _match_catalog(recipe.jinja_template)
    if entry is not None:
        apply_catalog(recipe, entry)
        return
    if license_text and not recipe.licenses:
        recipe.licenses.append(license_text)
    if license_id and not recipe.license_ids:
        spdx = license_id
        with contextlib.suppress(SourceError, ImportError):
            spdx = _license_text(license_id)[1]
        recipe.license_ids.append(spdx)
    if recipe.template is None:
        recipe.warnings.append("no Go template (no TEMPLATE line and no catalogue entry matches the chat "
                               "template): Ollama will use its default prompt template")


# ---- GGUF facts for the config ---------------------------------------------------------------------
def human_number(n: int) -> str:
    """Ollama's format.HumanNumber (the config's model_type, e.g. 7.2B)."""
    if n >= 1_000_000_000:
        v = n / 1e9
        return f"{v:.0f}B" if v == int(v) else f"{v:.1f}B"
    if n >= 1_000_000:
        v = n / 1e6
        return f"{v:.0f}M" if v == int(v) else f"{v:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


@dataclass
class GGUFFacts:
    architecture: str = ""
    file_type: str = ""
    parameter_count: int = 0
    chat_template: str | None = None
    license: str | None = None
    name: str | None = None


def gguf_facts(path: str | Path) -> GGUFFacts:
    reader = read_gguf(path)

    def get(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None and f.data else None

    count = sum(int(t.n_elements) for t in reader.tensors)
    facts = GGUFFacts(architecture=get("general.architecture") or "",
                      file_type=file_type_name(get("general.file_type")) or "", parameter_count=count,
                      chat_template=get("tokenizer.chat_template"), license=get("general.license"),
                      name=get("general.name"))
    return facts


# ---- assembling layers -------------------------------------------------------------------------------
def _blob(store: Store, media_type: str, data: bytes, filepath: str | None = None) -> Descriptor:
    digest, size = store.write_blob(data)
    return Descriptor(media_type, digest, size, {bundle.MODELPACK_FILEPATH: filepath} if filepath else {})


def ollama_layers(store: Store, base: list[Descriptor], recipe: Recipe, params: dict[str, Any]) -> list[Descriptor]:
    """Overlay a recipe on base layers as Ollama does: template/system replaced, licenses
    appended, params merged (given as `params`), messages replaced."""
    layers = list(base)

    def replace(media_types: tuple[str, ...], new: Descriptor) -> None:
        layers[:] = [d for d in layers if d.media_type not in media_types] + [new]

    if recipe.template:
        replace((bundle.OLLAMA_TEMPLATE, "application/vnd.ollama.image.prompt"),
                _blob(store, bundle.OLLAMA_TEMPLATE, recipe.template.encode("utf-8")))
    if recipe.system:
        replace((bundle.OLLAMA_SYSTEM,), _blob(store, bundle.OLLAMA_SYSTEM, recipe.system.encode("utf-8")))
    for text in recipe.licenses:
        layers.append(_blob(store, bundle.OLLAMA_LICENSE, text.encode("utf-8")))
    if recipe.params:
        replace((bundle.OLLAMA_PARAMS,), _blob(store, bundle.OLLAMA_PARAMS, bundle.ollama_params(params)))
    if recipe.messages:
        replace((bundle.OLLAMA_MESSAGES,), _blob(store, bundle.OLLAMA_MESSAGES, bundle.ollama_messages(recipe.messages)))
    return layers


def modelpack_layers(store: Store, model: Descriptor, parts: BundleContent) -> list[Descriptor]:
    layers = [Descriptor(bundle.MODELPACK_WEIGHT, model.digest, model.size, {bundle.MODELPACK_FILEPATH: MP_WEIGHT})]
    cfg = bundle.MODELPACK_WEIGHT_CONFIG
    if parts.jinja_template:
        layers.append(_blob(store, cfg, parts.jinja_template.encode("utf-8"), MP_JINJA))
    if parts.template:
        layers.append(_blob(store, cfg, parts.template.encode("utf-8"), MP_GO_TEMPLATE))
    if parts.params:
        gen = {GENERATION_KEYS[k]: v for k, v in parts.params.items() if k in GENERATION_KEYS}
        if gen:
            layers.append(_blob(store, cfg, bundle.go_encode(gen), MP_GENERATION))
        layers.append(_blob(store, cfg, bundle.ollama_params(parts.params), MP_PARAMS))
    if parts.system:
        layers.append(_blob(store, cfg, parts.system.encode("utf-8"), MP_SYSTEM))
    if parts.messages:
        layers.append(_blob(store, cfg, bundle.ollama_messages(parts.messages), MP_MESSAGES))
    for i, text in enumerate(parts.licenses):
        layers.append(_blob(store, bundle.MODELPACK_DOC, text.encode("utf-8"), "LICENSE" if i == 0 else f"LICENSE.{i + 1}"))
    return layers


# ---- conversion and verification ---------------------------------------------------------------------
def _call_with_supported(fn, *args, **kwargs):
    """Call fn with the keyword arguments it accepts (the converter's options grow over time)."""
    import inspect

    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return fn(*args, **kwargs)


def convert_into_store(store: Store, checkpoint, *, quant: str | None, recipe: Recipe, device: str = "auto",
                       progress: Progress | None = None) -> Descriptor:
    """Convert an open checkpoint straight into a store blob (hashed while written); the model layer."""
    from modelpack.convert import write_gguf

    extra_kv: dict[str, Any] = {}
    if recipe.jinja_template:
        extra_kv["tokenizer.chat_template"] = recipe.jinja_template
    if recipe.license_ids:
        extra_kv["general.license"] = " AND ".join(recipe.license_ids)
    with store.blob_writer() as w:
        _call_with_supported(write_gguf, checkpoint, w, quant=quant, extra_kv=extra_kv, device=device,
                             progress=progress)
    return Descriptor(bundle.OLLAMA_MODEL, w.digest, w.size)


def run_verify(*, recipe: Recipe, params: dict[str, Any], entry, gguf_path: Path, target: str) -> bool | None:
    """verify-template on what the bundle will hold: the GGUF's own tokenizer and Jinja template,
    the Go template, the stop strings, and the catalogue's reference conversations.
    None: nothing to verify (no Go template, or no verify module)."""
    try:
        from modelpack.tokenize import load_gguf_tokenizer
        from modelpack.verify import verify
        from modelpack.verify_targets import match_entry, misfit
    except ImportError:
        return None
    tok = load_gguf_tokenizer(gguf_path)
    jinja = recipe.jinja_template or tok.chat_template
    if not recipe.template and not jinja:
        return None
    if entry is not None and (why := misfit(entry, tok)):
        raise TemplateError(f"the checkpoint's tokenizer is not {entry.name}'s: {why}",
                            hint=f"--from must be a copy of {entry.repo}; or build with --no-verify")
    entry = entry or match_entry(tok, jinja)
    facts = entry.tokenizer if entry is not None else None
    stop = params.get("stop")
    try:
        report = verify(jinja, recipe.template, [stop] if isinstance(stop, str) else stop, tok,
                        entry.references_for(None) if entry is not None else [],
                        bos_token=(facts.bos or None) if facts else None,
                        eos_token=(facts.eos or None) if facts else None,
                        eot_token=(facts.eot or None) if facts else None, system=recipe.system, target=target,
                        model=entry.name if entry is not None else None,
                        go_origin=(recipe.path, recipe.template_line) if recipe.path and recipe.template_line else None)
    except TemplateError as err:  # a template that does not render, or no Go toolchain to render it
        raise TemplateError(f"template verification could not run: {err.message}",
                            hint=(err.hint + "; or " if err.hint else "") + "build with --no-verify to skip it") from None
    if not report.ok:
        failures = report.failures
        # the check that names the cause best: a render error, a wrong token, an id mismatch with a hint,
        # the system prompt, stop strings, then whatever failed first
        rank = ("render[", "templates", "special-tokens[", "generation-prompt", "hinted", "system", "stop[")

        def order(c) -> int:
            hinted = any(x.startswith("hint:") for x in c.details.get("lines", []))
            return next((i for i, r in enumerate(rank) if c.name.startswith(r) or (r == "hinted" and hinted)),
                        len(rank))

        first = min(failures, key=order)
        hints = [x.removeprefix("hint: ") for x in first.details.get("lines", []) if x.startswith("hint:")]
        n = len(failures)
        raise TemplateError(f"template verification failed ({n} check{'s' if n != 1 else ''}): {first.name}: "
                            f"{first.message}" + (f" ({hints[0]})" if hints else ""),
                            hint="fix the template (`modelpack verify-template` shows every check), or build with "
                            "--no-verify to tag it anyway")
    return True


# ---- the command -------------------------------------------------------------------------------------
def _recipe_for(source: str | None, modelfile: str | None, store: Store) -> tuple[Recipe, str | None]:
    """(recipe, Modelfile path) from SOURCE and/or -f."""
    if modelfile is not None:
        return load_modelfile(modelfile), modelfile
    if source is None:
        raise InputError("nothing to build: give a SOURCE or -f Modelfile")
    path = Path(source).expanduser()
    if path.is_file() and not is_gguf(path):
        return load_modelfile(path), str(path)
    return Recipe(source=source), None


def build(source: str | None = None, *, quant: str | None = None, tag: str | None = None,
          modelfile: str | None = None, format: str = "ollama", from_dir: str | None = None,
          verify: bool = True, force: bool = False, device: str = "auto", progress: Progress | None = None,
          home: str | None = None) -> BuildResult:
    """Build SOURCE into a bundle and tag it; returns what was stored."""
    if format not in FORMATS:
        raise InputError(f"unknown bundle format {format!r}; known: {', '.join(FORMATS)}")
    store = Store(home)
    progress = or_null(progress)
    if modelfile is not None and source is not None:
        if tag is not None:
            raise InputError("with -f, SOURCE is the name to tag; give it or --tag, not both")
        source, tag = None, source  # `build NAME -f Modelfile`, as in `ollama create NAME -f Modelfile`
    if tag is not None:
        parse_ref(tag)  # a bad name fails now, not after the conversion
    recipe, mf_path = _recipe_for(source, modelfile, store)
    if quant:
        quant = quant.upper()
        recipe.quant = quant
    try:
        src = resolve_source(recipe.source, store=store, base_dir=recipe.base_dir)
    except SourceError as err:
        if mf_path and err.line is None:
            raise ModelfileError(f"FROM {recipe.source}: {err.message}", path=mf_path, line=recipe.source_line,
                                 hint=err.hint) from None
        raise
    if from_dir is not None and src.kind != "catalog":
        raise InputError(f"--from swaps in a local checkpoint for a catalogue model; {recipe.source!r} is a {src.kind}")
    if quant and src.kind in ("gguf", "bundle"):
        raise InputError(f"--quant needs a checkpoint to convert; {recipe.source!r} is already a GGUF "
                         f"({src.kind})", hint="build from the checkpoint folder or the catalogue name")

    with store.writing():  # gc leaves our blobs alone until the tag exists
        base: list[Descriptor] = []
        inherited: BundleContent | None = None
        facts: GGUFFacts | None = None
        if src.kind == "bundle":
            inherited = read_bundle(store, src.ref)
            if inherited.model is None:
                raise SourceError(f"bundle {src.ref.short} has no model layer")
            model = Descriptor(bundle.OLLAMA_MODEL, inherited.model.digest, inherited.model.size)
            base = ([d for d in bundle.manifest_layers(inherited.manifest)] if inherited.format == "ollama"
                    else [model])
            if recipe.jinja_template is None:
                recipe.jinja_template = inherited.jinja_template
        elif src.kind == "gguf":
            try:  # a broken file fails here, named as the user gave it, before anything enters the store
                facts = gguf_facts(src.value)
            except InputError as err:
                if not mf_path:
                    raise
                raise ModelfileError(f"FROM {recipe.source}: {err}", path=mf_path, line=recipe.source_line) from None
            with progress.task(f"importing {Path(src.value).name}", Path(src.value).stat().st_size) as task:
                digest, size = store.import_file(src.value, progress_task=task)
            model = Descriptor(bundle.OLLAMA_MODEL, digest, size)
            base = [model]
            apply_found(recipe, jinja=facts.chat_template, license_text=None, license_id=facts.license)
        else:
            from modelpack.checkpoint import open_checkpoint

            try:
                if src.kind == "catalog":
                    apply_catalog(recipe, src.entry)
                    checkpoint = open_checkpoint(from_dir) if from_dir else open_checkpoint(
                        src.entry.repo, revision=src.entry.revision)
                else:  # a folder, or a Hub repo (downloaded here)
                    checkpoint = open_checkpoint(src.value)
            except InputError as err:  # say which Modelfile line named it
                if src.kind == "catalog" and not from_dir and not err.hint:
                    err.hint = f"give a local copy of {src.entry.repo} with --from DIR"
                if not mf_path:
                    raise
                raise ModelfileError(f"FROM {recipe.source}: {err}", path=mf_path, line=recipe.source_line,
                                     hint=err.hint) from None
            if src.kind != "catalog":
                jinja, text, license_id = _checkpoint_facts(checkpoint.path)
                apply_found(recipe, jinja=jinja, license_text=text, license_id=license_id)
            with checkpoint:
                model = convert_into_store(store, checkpoint, quant=quant, recipe=recipe, device=device,
                                           progress=progress)
            base = [model]
        if facts is None:  # a GGUF source was read above; the stored copy has the same bytes
            facts = gguf_facts(store.blob_path(model.digest))

        params = dict(inherited.params) if inherited else {}
        params.update(recipe.params)
        verified = None
        if verify:
            verified = run_verify(recipe=recipe, params=params, entry=src.entry,
                                  gguf_path=store.blob_path(model.digest), target=str(recipe.source))

        base_config = inherited.config if inherited and inherited.format == "ollama" else {}
        if format == "ollama":
            layers = ollama_layers(store, base, recipe, params)
            cfg_bytes = bundle.OllamaConfig(
                model_family=facts.architecture, model_families=[facts.architecture] if facts.architecture else [],
                model_type=human_number(facts.parameter_count), file_type=facts.file_type,
                renderer=recipe.renderer or base_config.get("renderer", ""),
                parser=recipe.parser or base_config.get("parser", ""),
                requires=recipe.requires or base_config.get("requires", ""),
                diff_ids=[d.digest for d in layers]).encode()
            config = _blob(store, bundle.OLLAMA_CONFIG, cfg_bytes)
            raw = bundle.ollama_manifest(config, layers)
        else:
            parts = inherited or BundleContent(parse_ref("x"), "ollama", {}, b"")
            merged = BundleContent(parts.ref, "modelpack", {}, b"",
                                   template=recipe.template or parts.template,
                                   jinja_template=recipe.jinja_template or parts.jinja_template or facts.chat_template,
                                   system=recipe.system or parts.system, params=params,
                                   licenses=list(parts.licenses) + list(recipe.licenses),
                                   messages=list(recipe.messages or parts.messages))
            layers = modelpack_layers(store, model, merged)
            entry = src.entry or _match_catalog(merged.jinja_template)
            license_ids = list(dict.fromkeys(list(parts.license_ids) + list(recipe.license_ids)))
            if not license_ids and facts.license:  # what the GGUF says (general.license)
                license_ids = [x.strip() for x in facts.license.split(" AND ") if x.strip()]
            cfg_bytes = bundle.ModelPackConfig(
                name=src.name, family=facts.architecture, licenses=license_ids,
                source_url=f"https://huggingface.co/{entry.repo}" if entry is not None else "",
                revision=entry.revision if entry is not None else "",
                param_size=human_number(facts.parameter_count), quantization=facts.file_type,
                precision=facts.file_type if facts.file_type in ("F32", "F16", "BF16") else "",
                diff_ids=[d.digest for d in layers]).encode()
            config = _blob(store, bundle.MODELPACK_CONFIG, cfg_bytes)
            raw = bundle.modelpack_manifest(config, layers)

        ref = parse_ref(tag) if tag else ModelRef(
            "registry.ollama.ai", "library", src.name if src.kind != "bundle" else src.ref.model,
            (quant or facts.file_type or "latest").lower())
        # A name given without :TAG gets `latest`, as in Ollama (`show NAME` then finds it).
        digest = sha256_digest(raw)
        if store.has_manifest(ref) and not force and store.manifest_digest(ref) != digest:
            raise OutputExistsError(f"{ref.short} already exists with different content",
                                    hint="add --force to replace it, or pick another --tag")
        store.put_manifest(ref, raw)
    return BuildResult(ref=ref, digest=digest, format=format, config=config, layers=layers, manifest=raw,
                       verified=verified, warnings=list(recipe.warnings))
