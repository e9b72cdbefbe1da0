"""Bundle formats: Ollama's image manifest and the CNCF ModelPack artifact.

JSON here is written the way Go's encoding/json Encoder writes it (the encoder Ollama uses
for manifests, configs, params and messages): struct fields in declaration order, map keys
sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped, float32 values in their shortest form,
and a trailing newline. Same content in, same bytes out, so the same digests as Ollama.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

# ---- media types ------------------------------------------------------------------------
OLLAMA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OLLAMA_CONFIG = "application/vnd.docker.container.image.v1+json"
OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_TEMPLATE = "application/vnd.ollama.image.template"
OLLAMA_SYSTEM = "application/vnd.ollama.image.system"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"
OLLAMA_LICENSE = "application/vnd.ollama.image.license"
OLLAMA_MESSAGES = "application/vnd.ollama.image.messages"
OLLAMA_ADAPTER = "application/vnd.ollama.image.adapter"
OLLAMA_PROJECTOR = "application/vnd.ollama.image.projector"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

MODELPACK_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODELPACK_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODELPACK_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
MODELPACK_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
MODELPACK_DOC = "application/vnd.cncf.model.doc.v1.raw"
MODELPACK_FILEPATH = "org.cncf.model.filepath"

MANIFEST_MEDIA_TYPES = (OLLAMA_MANIFEST, OCI_MANIFEST)

# Ollama layer kind -> media type (singletons are replaced when a Modelfile overrides them)
OLLAMA_LAYER_TYPES = {
    "model": OLLAMA_MODEL,
    "template": OLLAMA_TEMPLATE,
    "system": OLLAMA_SYSTEM,
    "license": OLLAMA_LICENSE,
    "params": OLLAMA_PARAMS,
    "messages": OLLAMA_MESSAGES,
}


# ---- Go-compatible JSON ---------------------------------------------------------------------
class Float32(float):
    """A float that Go holds as float32 (Ollama's typed PARAMETER values)."""


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(s: str) -> str:
    # Python's escaping of `"`, `\`, \n, \r, \t and other control characters (\u00XX,
    # lowercase hex) matches Go's; Go (1.22+) also writes \b and \f in short form.
    out = json.dumps(s, ensure_ascii=False)
    out = out.replace("\\u0008", "\\b").replace("\\u000c", "\\f")
    for ch, esc in _GO_ESCAPES.items():
        out = out.replace(ch, esc)
    return out


def _go_float(value: float, bits: int) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"JSON cannot encode {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    ftype = np.float32 if bits == 32 else np.float64
    v = ftype(value)
    a = abs(v)
    if a < ftype(1e-6) or a >= ftype(1e21):
        text = np.format_float_scientific(v, unique=True, trim="-", exp_digits=2)
        mant, _, exp = text.partition("e")
        if exp.startswith("-0"):  # Go cleans e-09 to e-9
            exp = "-" + exp[2:]
        return f"{mant}e{exp}"
    return np.format_float_positional(v, unique=True, trim="-")


def go_json(obj: Any) -> str:
    """Encode like Go's json.Marshal: dict keys are sorted (Go maps), order kept for
    `GoStruct` (an ordered list of (key, value) pairs standing for a struct)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, Float32):
        return _go_float(float(obj), 32)
    if isinstance(obj, int):
        return str(int(obj))
    if isinstance(obj, float):
        return _go_float(obj, 64)
    if isinstance(obj, str):
        return _go_string(obj)
    if isinstance(obj, GoStruct):
        return "{" + ",".join(f"{_go_string(k)}:{go_json(v)}" for k, v in obj.items) + "}"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{_go_string(k)}:{go_json(obj[k])}" for k in sorted(obj)) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in obj) + "]"
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def go_encode(obj: Any) -> bytes:
    """json.NewEncoder(w).Encode(obj): go_json plus a trailing newline."""
    return (go_json(obj) + "\n").encode("utf-8")


class GoStruct:
    """An ordered JSON object (a Go struct); fields whose value is OMIT are left out."""

    def __init__(self, *items: tuple[str, Any]) -> None:
        self.items = [(k, v) for k, v in items if v is not OMIT]


OMIT = object()


def omitempty(value: Any) -> Any:
    return OMIT if value in (None, "", 0, False) or (isinstance(value, (list, dict)) and not value) else value


# ---- descriptors and manifests -------------------------------------------------------------
@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_go(self) -> GoStruct:
        return GoStruct(
            ("mediaType", self.media_type),
            ("digest", self.digest),
            ("size", int(self.size)),
            ("annotations", omitempty(dict(self.annotations))),
        )

    def to_dict(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": int(self.size)}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Descriptor":
        return cls(d["mediaType"], d["digest"], int(d["size"]), dict(d.get("annotations") or {}))


def manifest_layers(manifest: dict) -> list[Descriptor]:
    """The layer descriptors of a manifest dict (Ollama or OCI)."""
    return [Descriptor.from_dict(d) for d in manifest.get("layers") or []]


def manifest_config(manifest: dict) -> Descriptor | None:
    cfg = manifest.get("config")
    return Descriptor.from_dict(cfg) if cfg and cfg.get("digest") else None


def manifest_blobs(manifest: dict) -> list[str]:
    """Every blob digest a manifest references: config first, then layers."""
    cfg = manifest_config(manifest)
    return ([cfg.digest] if cfg else []) + [d.digest for d in manifest_layers(manifest)]


def manifest_size(manifest: dict) -> int:
    cfg = manifest_config(manifest)
    return (cfg.size if cfg else 0) + sum(d.size for d in manifest_layers(manifest))


def is_modelpack(manifest: dict) -> bool:
    return manifest.get("artifactType") == MODELPACK_ARTIFACT or (
        (manifest.get("config") or {}).get("mediaType") == MODELPACK_CONFIG
    )


# ---- Ollama ------------------------------------------------------------------------------------
@dataclass
class OllamaConfig:
    """Ollama's ConfigV2 (types/model/config.go), with the image-spec fields older Ollama wrote."""

    model_format: str = "gguf"
    model_family: str = ""
    model_families: list[str] = field(default_factory=list)
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    diff_ids: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return go_encode(
            GoStruct(
                ("model_format", self.model_format),
                ("model_family", self.model_family),
                ("model_families", list(self.model_families) or None),
                ("model_type", self.model_type),
                ("file_type", self.file_type),
                ("renderer", omitempty(self.renderer)),
                ("parser", omitempty(self.parser)),
                ("requires", omitempty(self.requires)),
                ("architecture", self.architecture),
                ("os", self.os),
                ("rootfs", GoStruct(("type", "layers"), ("diff_ids", list(self.diff_ids)))),
            )
        )


def ollama_manifest(config: Descriptor, layers: Iterable[Descriptor]) -> bytes:
    """The manifest bytes exactly as Ollama's WriteManifest encodes them."""
    return go_encode(
        GoStruct(
            ("schemaVersion", 2),
            ("mediaType", OLLAMA_MANIFEST),
            ("config", config.to_go()),
            ("layers", [d.to_go() for d in layers]),
        )
    )


def ollama_params(params: dict[str, Any]) -> bytes:
    """The params layer: Ollama encodes map[string]any, so keys are sorted."""
    return go_encode(params)


def ollama_messages(messages: Iterable[tuple[str, str]]) -> bytes:
    return go_encode([GoStruct(("role", role), ("content", content)) for role, content in messages])


# ---- CNCF ModelPack -----------------------------------------------------------------------------
@dataclass
class ModelPackConfig:
    """application/vnd.cncf.model.config.v1+json (model-spec specs-go/v1/config.go). No
    createdAt: it would change the digest of every build."""

    name: str = ""
    family: str = ""
    licenses: list[str] = field(default_factory=list)
    source_url: str = ""
    revision: str = ""
    architecture: str = "transformer"
    format: str = "gguf"
    param_size: str = ""
    precision: str = ""
    quantization: str = ""
    diff_ids: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        descriptor = GoStruct(
            ("family", omitempty(self.family)),
            ("name", omitempty(self.name)),
            ("sourceURL", omitempty(self.source_url)),
            ("revision", omitempty(self.revision)),
            ("licenses", omitempty(list(self.licenses))),
        )
        modelfs = GoStruct(("type", "layers"), ("diffIds", list(self.diff_ids)))
        config = GoStruct(
            ("architecture", omitempty(self.architecture)),
            ("format", omitempty(self.format)),
            ("paramSize", omitempty(self.param_size)),
            ("precision", omitempty(self.precision)),
            ("quantization", omitempty(self.quantization)),
        )
        return go_encode(GoStruct(("descriptor", descriptor), ("modelfs", modelfs), ("config", config)))


def modelpack_manifest(config: Descriptor, layers: Iterable[Descriptor]) -> bytes:
    return go_encode(
        GoStruct(
            ("schemaVersion", 2),
            ("mediaType", OCI_MANIFEST),
            ("artifactType", MODELPACK_ARTIFACT),
            ("config", config.to_go()),
            ("layers", [d.to_go() for d in layers]),
        )
    )


# ---- what a bundle in the store holds ----------------------------------------------------------------
@dataclass
class BundleContent:
    """The parts of a stored bundle, whatever its format."""

    ref: Any  # ModelRef
    format: str
    manifest: dict
    raw: bytes = field(repr=False)
    config: dict = field(default_factory=dict)
    model: Descriptor | None = None
    template: str | None = None
    jinja_template: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    license_ids: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)


def read_bundle(store, ref) -> BundleContent:
    """The parts of the bundle `ref` in `store` (a modelpack.store.Store)."""
    from modelpack.names import ModelRef, parse_ref
    from modelpack.recipe import coerce_params

    ref = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    raw, manifest = store.get_manifest(ref)
    cfg = manifest_config(manifest)
    config = json.loads(store.read_blob(cfg.digest)) if cfg else {}
    text = lambda d: store.read_blob(d.digest).decode("utf-8")  # noqa: E731
    if is_modelpack(manifest):
        c = BundleContent(ref, "modelpack", manifest, raw, config)
        c.license_ids = list((config.get("descriptor") or {}).get("licenses") or [])
        for d in manifest_layers(manifest):
            fp = d.annotations.get(MODELPACK_FILEPATH, "")
            if d.media_type == MODELPACK_WEIGHT and c.model is None:
                c.model = d
            elif fp == MP_JINJA:
                c.jinja_template = text(d)
            elif fp == MP_GO_TEMPLATE:
                c.template = text(d)
            elif fp == MP_SYSTEM:
                c.system = text(d)
            elif fp == MP_PARAMS:
                c.params = coerce_params(json.loads(text(d)))
            elif fp == MP_MESSAGES:
                c.messages = [(m["role"], m["content"]) for m in json.loads(text(d))]
            elif d.media_type == MODELPACK_DOC and fp.startswith("LICENSE"):
                c.licenses.append(text(d))
        return c
    c = BundleContent(ref, "ollama", manifest, raw, config)
    for d in manifest_layers(manifest):
        if d.media_type == OLLAMA_MODEL and c.model is None:
            c.model = d
        elif d.media_type == OLLAMA_TEMPLATE:
            c.template = text(d)
        elif d.media_type == OLLAMA_SYSTEM:
            c.system = text(d)
        elif d.media_type == OLLAMA_PARAMS:
            c.params = coerce_params(json.loads(text(d)))
        elif d.media_type == OLLAMA_LICENSE:
            c.licenses.append(text(d))
        elif d.media_type == OLLAMA_MESSAGES:
            c.messages = [(m["role"], m["content"]) for m in json.loads(text(d))]
    return c


# ModelPack file paths (org.cncf.model.filepath) for the non-weight parts
MP_WEIGHT = "model.gguf"
MP_JINJA = "chat_template.jinja"
MP_GO_TEMPLATE = "template.gotmpl"
MP_SYSTEM = "system_prompt.txt"
MP_PARAMS = "params.json"
MP_GENERATION = "generation_config.json"
MP_MESSAGES = "messages.json"
# Ollama parameter -> Hugging Face generation_config.json key
GENERATION_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                   "typical_p": "typical_p", "repeat_penalty": "repetition_penalty",
                   "num_predict": "max_new_tokens", "stop": "stop_strings"}



def canonical_json(obj: Any) -> bytes:
    """Compact, sorted-key JSON for our own documents (index.json, oci-layout)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
