"""What verify-template checks for each kind of target: templates, tokenizer, stop strings, references.

A catalogue name brings everything but the tokenizer file (given with `tokenizer=` or found in the
Hugging Face cache). A checkpoint folder or a GGUF file brings its tokenizer and Jinja template; a
Modelfile adds a Go TEMPLATE, SYSTEM and stop parameters; a bundle in the store brings all of them.
The reference conversations come from the catalogue entry that fits the tokenizer (or `model=`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelpack.catalog import CatalogEntry, Reference, get_entry, has_entry, list_entries
from modelpack.errors import ModelpackError, SourceError
from modelpack.templates import render_jinja
from modelpack.tokenize import Tokenizer, load_checkpoint_tokenizer, load_gguf_tokenizer, load_tokenizer



@dataclass
class Job:
    jinja_template: str | None = None
    go_template: str | None = None
    stop: list[str] | None = None
    tokenizer: Tokenizer | None = None
    references: list[Reference] = field(default_factory=list)
    bos_token: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None
    system: str | None = None
    model: str | None = None
    training_format: dict | None = None
    go_origin: tuple[str, int] | None = None  # (Modelfile, line) where the Go template starts
    jinja_origin: str | None = None  # the file the Jinja template came from
    misfit: str | None = None  # why the tokenizer is not the catalogue entry's, when it is not


def _hf_cached_tokenizer(entry: CatalogEntry) -> Tokenizer | None:
    """The entry's tokenizer if the Hugging Face cache already holds it (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in ("tokenizer.model", "tokenizer.json"):
        found = try_to_load_from_cache(entry.repo, name, revision=entry.revision)
        if isinstance(found, str):
            return load_checkpoint_tokenizer(Path(found).parent)
    return None


def misfit(entry: CatalogEntry, tok: Tokenizer) -> str | None:
    """Why `entry`'s references cannot apply to this vocabulary (None: they can)."""
    facts = entry.tokenizer
    if facts.kind != tok.kind:
        return f"{entry.name} has a {facts.kind} tokenizer, this one is {tok.kind}"
    for text, i in facts.added_tokens.items():
        if tok.specials.get(text) != i:
            has = tok.specials.get(text)
            return f"{entry.name} has {text!r} as id {i}, this vocabulary " + (
                f"as id {has}" if has is not None else "does not have it")
    for special in (facts.bos, facts.eot):
        if special and special not in tok.specials:
            return f"{entry.name} has the special token {special!r}, this vocabulary does not"
    ref = next((r for r in entry.references if r.ids and r.text), None)
    if ref is not None:  # its published ids must be what this vocabulary makes of its published text
        if max(ref.ids) >= tok.vocab_size:
            return f"{entry.name}'s published ids go up to {max(ref.ids)}, this vocabulary has {tok.vocab_size} tokens"
        text = (facts.bos or "") + ref.text
        if tok.encode(text, convention=ref.convention) != ref.ids:
            return f"this vocabulary does not turn {entry.name}'s published prompt into its published ids"
    return None


def fits(entry: CatalogEntry, tok: Tokenizer) -> bool:
    """Whether `entry`'s references can apply to this vocabulary."""
    return misfit(entry, tok) is None


def match_entry(tok: Tokenizer, jinja: str | None) -> CatalogEntry | None:
    """The catalogue entry this tokenizer (and template) belongs to, if one fits."""
    candidates = [e for e in list_entries() if fits(e, tok)]
    if not candidates:
        return None
    if jinja:
        for e in candidates:
            if e.jinja_template.strip() == jinja.strip():
                return e

        def likeness(e: CatalogEntry) -> float:
            import difflib

            try:
                msgs = e.references[0].messages if e.references else [{"role": "user", "content": "Hello"}]
                a = render_jinja(e.jinja_template, msgs, bos_token=e.tokenizer.bos)
                b = render_jinja(jinja, msgs, bos_token=e.tokenizer.bos)
            except ModelpackError:
                return 0.0
            return difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()

        return max(candidates, key=likeness)
    return candidates[0]


def _from_entry(job: Job, entry: CatalogEntry, *, variant: str | None, use_templates: bool) -> None:
    e = entry.with_variant(variant)
    job.model = entry.name + (f" ({variant})" if variant else "")
    job.references = e.references_for(variant)
    job.training_format = e.training_format
    if use_templates:
        job.jinja_template = job.jinja_template or e.jinja_template
        job.go_template = job.go_template or e.go_template
    if job.stop is None:
        job.stop = list(e.stop)
    job.system = job.system if job.system is not None else e.system
    job.bos_token = job.bos_token or e.tokenizer.bos or None
    job.eos_token = job.eos_token or e.tokenizer.eos or None
    job.eot_token = job.eot_token or e.tokenizer.eot or None


def _finish(job: Job, *, variant: str | None, model: str | None) -> Job:
    """Add references (and what they imply) from the catalogue entry that fits."""
    entry = get_entry(model) if model else (match_entry(job.tokenizer, job.jinja_template) if job.tokenizer else None)
    if model and job.tokenizer is not None:
        job.misfit = misfit(entry, job.tokenizer)
    if entry is not None:
        # A fitting entry's Go template is what a bundle of this model would ship.
        _from_entry(job, entry, variant=variant, use_templates=False)
        if variant:  # a variant is its own template: check it with this vocabulary
            v = entry.with_variant(variant)
            job.jinja_template, job.go_template = v.jinja_template, v.go_template
            job.jinja_origin = job.go_origin = None
        elif job.go_template is None:
            job.go_template = entry.go_template
    if job.stop is None and job.tokenizer is not None and job.tokenizer.eos_id is not None:
        job.stop = [job.tokenizer.piece(job.tokenizer.eos_id)]
    return job


def _from_store(ref: str, *, variant: str | None, model: str | None) -> Job:
    from modelpack.bundle import read_bundle
    from modelpack.store import Store

    store = Store()
    content = read_bundle(store, ref)  # an Ollama bundle or a CNCF ModelPack artifact
    if content.model is None:
        raise SourceError(f"bundle {ref} has no GGUF model layer to take the tokenizer from")
    job = Job(go_template=content.template, system=content.system)
    job.tokenizer = load_gguf_tokenizer(store.blob_path(content.model.digest))
    job.jinja_template = content.jinja_template or job.tokenizer.chat_template
    job.jinja_origin = f"{ref} (the GGUF's tokenizer.chat_template)" if not content.jinja_template else f"{ref}"
    stop = content.params.get("stop")
    if stop is not None:
        job.stop = [stop] if isinstance(stop, str) else list(stop)
    _finish(job, variant=variant, model=model)
    job.references += history_reference("bundle-messages", content.messages)
    return job


def history_reference(name: str, messages: list[tuple[str, str]]) -> list[Reference]:
    """A MESSAGE history as a reference both templates must render alike. System messages are left out
    (the system check covers them: the Go template gets them as .System, apart from the turns), and the
    history is followed by a new user prompt, as it always is in use."""
    msgs = [{"role": role, "content": text} for role, text in messages if role != "system"]
    if not msgs:
        return []
    if msgs[-1]["role"] != "user":
        msgs.append({"role": "user", "content": "Hello"})
    return [Reference(name=name, messages=msgs)]


def _from_modelfile(path: Path, *, variant: str | None, tokenizer: str | None, model: str | None) -> Job:
    from modelpack.recipe import load_modelfile

    recipe = load_modelfile(path)
    source = recipe.source or ""
    base = recipe.base_dir or path.parent
    local = (base / source) if source and not Path(source).is_absolute() else Path(source)
    if source and local.exists():
        job = resolve(str(local), variant=variant, tokenizer=tokenizer, model=model)
    else:
        job = resolve(source, variant=variant, tokenizer=tokenizer, model=model)
    if recipe.template is not None:
        job.go_template = recipe.template
        job.go_origin = (str(path), recipe.template_line or 1)
    if recipe.jinja_template is not None:
        job.jinja_template = recipe.jinja_template
    if recipe.system is not None:
        job.system = recipe.system
    stop = recipe.params.get("stop")
    if stop is not None:
        job.stop = [stop] if isinstance(stop, str) else list(stop)
    job.references = [*job.references, *history_reference("modelfile-messages", recipe.messages)]
    return job


def resolve(target: str, *, variant: str | None = None, tokenizer: str | None = None,
            model: str | None = None) -> Job:
    """Everything verify() needs for `target`."""
    path = Path(target)
    if has_entry(target) and not path.exists():
        entry = get_entry(target)
        job = Job()
        _from_entry(job, entry, variant=variant, use_templates=True)
        if tokenizer:
            job.tokenizer = load_tokenizer(tokenizer, added=entry.tokenizer.added_tokens)
            job.misfit = misfit(entry, job.tokenizer)
        else:
            job.tokenizer = _hf_cached_tokenizer(entry)
        return job
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        tok = load_checkpoint_tokenizer(path) if path.is_dir() else load_gguf_tokenizer(path)
        return _finish(Job(jinja_template=tok.chat_template, tokenizer=tok, jinja_origin=tok.chat_template_origin),
                       variant=variant, model=model)
    if path.is_file():
        return _from_modelfile(path, variant=variant, tokenizer=tokenizer, model=model)
    try:
        return _from_store(target, variant=variant, model=model)
    except ModelpackError as err:
        known = ", ".join(e.name for e in list_entries())
        raise SourceError(f"{target!r} is not a catalogue name, a folder, a GGUF file, a Modelfile or a model in "
                          f"the store ({err}); catalogue names: {known}") from None
