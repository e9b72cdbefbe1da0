"""Model references: `[host/][namespace/]model[:tag]`, with Ollama's rules.

Parsing follows Ollama's types/model/name.go: the tag is what follows the last ':' when it
comes after the last '/', then the model, namespace and host are cut from the right.
Missing parts take Ollama's defaults (registry.ollama.ai, library, latest). modelpack
stores every part lowercase, so two spellings of one name are one model.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from modelpack.errors import InvalidNameError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_ALNUM_UNDERSCORE = frozenset(string.ascii_letters + string.digits + "_")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # a manifest digest, as pinned by `name@digest`

# part kind -> (max length, extra characters allowed after the first)
PART_RULES: dict[str, tuple[int, frozenset[str]]] = {
    "host": (350, frozenset("-_.:")),
    "namespace": (80, frozenset("-_")),
    "model": (80, frozenset("-_.")),
    "tag": (80, frozenset("-_.")),
}


def invalid_part_reason(kind: str, value: str) -> str | None:
    """Why `value` is not a valid `kind` part, or None when it is valid."""
    max_len, extra = PART_RULES[kind]
    if not value:
        return f"empty {kind}"
    if len(value) > max_len:
        return f"{kind} longer than {max_len} characters"
    if value[0] not in _ALNUM_UNDERSCORE:
        return f"{kind} {value!r} must start with a letter, digit or '_'"
    for ch in value[1:]:
        if ch not in _ALNUM_UNDERSCORE and ch not in extra:
            return f"{kind} {value!r} may not contain {ch!r}"
    return None


@dataclass(frozen=True, order=True)
class ModelRef:
    host: str
    namespace: str
    model: str
    tag: str
    digest: str = ""  # 'sha256:<hex>' when the name pins a manifest (`...@sha256:<hex>`)

    def __str__(self) -> str:
        pin = f"@{self.digest}" if self.digest else ""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}{pin}"

    @property
    def short(self) -> str:
        """Ollama's DisplayShortest: default host and namespace left out."""
        prefix = ""
        if self.host != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """The registry repository name: namespace/model."""
        return f"{self.namespace}/{self.model}"

    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def with_tag(self, tag: str) -> "ModelRef":
        return parse_ref(f"{self.host}/{self.namespace}/{self.model}:{tag}")


def parse_ref(
    text: str,
    *,
    default_tag: str = DEFAULT_TAG,
    default_host: str = DEFAULT_HOST,
    default_namespace: str = DEFAULT_NAMESPACE,
    allow_digest: bool = False,
) -> ModelRef:
    """Parse and validate a model reference; raises InvalidNameError naming the bad part.

    With `allow_digest` (push/pull), `...[:tag]@sha256:<hex>` pins the manifest by its digest;
    the tag (default: `default_tag`) is the local name it is stored under.
    """
    raw = str(text).strip()
    s = raw
    for scheme in ("https://", "http://"):
        if s.startswith(scheme):
            s = s[len(scheme):]
            break
    if not s:
        raise InvalidNameError("empty model name")
    digest = ""
    if "@" in s:
        if not allow_digest:
            raise InvalidNameError(f"model name {raw!r}: digests ('@') are not accepted here")
        s, _, digest = s.rpartition("@")
        if not _DIGEST.fullmatch(digest):
            raise InvalidNameError(f"model name {raw!r}: digest must be sha256: and 64 lowercase hex digits")
    tag = None
    if s.rfind(":") > s.rfind("/"):
        s, _, tag = s.rpartition(":")
        if not tag:
            raise InvalidNameError(f"model name {raw!r}: empty tag after ':'")
    pieces = s.split("/")
    if len(pieces) > 3:
        raise InvalidNameError(f"model name {raw!r}: expected [host/][namespace/]model[:tag]")
    host, namespace = default_host, default_namespace
    if len(pieces) == 3:
        host, namespace, model = pieces
    elif len(pieces) == 2:
        namespace, model = pieces
    else:
        model = pieces[0]
    ref = ModelRef(
        host=host.lower(),
        namespace=namespace.lower(),
        model=model.lower(),
        tag=(tag if tag is not None else default_tag).lower(),
        digest=digest,
    )
    for kind, value in zip(("host", "namespace", "model", "tag"), ref.parts()):
        reason = invalid_part_reason(kind, value)
        if reason:
            raise InvalidNameError(f"model name {raw!r}: {reason}")
    return ref


def is_valid_ref(text: str) -> bool:
    try:
        parse_ref(text)
    except InvalidNameError:
        return False
    return True
