"""The exception tree. Every error names what is wrong and where.

    ModelpackError                  base; carries optional path/line/tensor/digest/url fields
    ├── InputError                  the user's input is wrong (exit code 2)
    │   ├── SourceError             a source cannot be resolved: missing files, unsupported arch
    │   ├── CheckpointError         a checkpoint is malformed: header, shard, shape, duplicate, NaN/Inf
    │   ├── ModelfileError          a Modelfile line cannot be parsed or honoured (has .line)
    │   ├── InvalidNameError        a model reference breaks the naming rules
    │   ├── UnknownQuantError       a quant type / mix name that does not exist
    │   ├── OutputExistsError       the output path exists and --force was not given
    │   └── GGUFError               a GGUF file cannot be read or is not what was expected
    ├── QuantizationError           a block cannot be quantized (Inf/NaN scale): has .tensor, .block
    ├── TemplateError               a template cannot be rendered or does not verify
    │   └── TemplateMismatchError   rendered/tokenized output differs from the reference
    ├── StoreError                  the local store
    │   ├── NotFoundError           no such model/tag/blob in the store
    │   └── DigestMismatchError     content does not hash to its digest (has .digest)
    ├── RegistryError               talking to an OCI registry (has .url, .status)
    │   ├── AuthError               401/403
    │   ├── RegistryNotFoundError   404
    │   ├── RateLimitError          429
    │   └── ProtocolError           the server does not speak the distribution API
    └── MissingExtraError           an optional extra (llama-cpp-python, torch) is not installed

The CLI maps every ModelpackError to one line plus a debug hint, and a non-zero exit.
"""

from __future__ import annotations


class ModelpackError(Exception):
    """Base class. `str(err)` is a single line naming the location of the problem."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        tensor: str | None = None,
        digest: str | None = None,
        url: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.tensor = tensor
        self.digest = digest
        self.url = url
        self.hint = hint

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.tensor is not None:
            where.append(f"tensor {self.tensor}")
        if self.url is not None:
            where.append(self.url)
        if self.digest is not None:
            where.append(self.digest)
        text = f"{': '.join(where)}: {self.message}" if where else self.message
        return " ".join(text.split("\n"))


class InputError(ModelpackError):
    exit_code = 2


class SourceError(InputError):
    pass


class CheckpointError(InputError):
    pass


class ModelfileError(InputError):
    pass


class InvalidNameError(InputError):
    pass


class UnknownQuantError(InputError):
    pass


class OutputExistsError(InputError):
    pass


class GGUFError(InputError):
    pass


class QuantizationError(ModelpackError):
    def __init__(self, message: str, *, block: int | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.block = block


class TemplateError(ModelpackError):
    pass


class TemplateMismatchError(TemplateError):
    pass


class StoreError(ModelpackError):
    pass


class NotFoundError(StoreError):
    pass


class DigestMismatchError(StoreError):
    pass


class RegistryError(ModelpackError):
    def __init__(self, message: str, *, status: int | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.status = status


class AuthError(RegistryError):
    pass


class RegistryNotFoundError(RegistryError):
    pass


class RateLimitError(RegistryError):
    pass


class ProtocolError(RegistryError):
    pass


class MissingExtraError(ModelpackError):
    """An optional dependency is missing; .hint says what to install."""
