"""A Hugging Face checkpoint: config, lazily memory-mapped safetensors tensors, tokenizer files.

`open_checkpoint(source)` takes a local folder or a Hub repo id `org/name[@revision]` (fetched with
huggingface_hub.snapshot_download, only the files a conversion needs; HF_HOME, HF_TOKEN and
HF_HUB_OFFLINE are honoured by huggingface_hub itself). Every safetensors header is parsed and
checked when the checkpoint is opened, so a truncated or corrupt shard, an index naming a missing
shard, or a tensor name found in two shards fails before any output is written.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelpack.errors import CheckpointError, SourceError

INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")
# What a conversion reads; README.md carries the model card the converter turns into general.* keys.
HUB_PATTERNS = ["config.json", "model*.safetensors", INDEX_NAME, *TOKENIZER_FILES, "README.md"]

# safetensors dtype -> (numpy dtype of the raw elements, bytes per element)
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live: file, absolute offset, dtype (safetensors name) and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class Checkpoint:
    path: Path
    config: dict
    tensors: dict[str, TensorRef]  # shard order, names sorted within a shard (the converter's order)
    repo_id: str | None = None
    revision: str | None = None
    _maps: dict[Path, mmap.mmap] = field(default_factory=dict, repr=False)
    _fds: dict[Path, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else ""

    def tensor_names(self) -> list[str]:
        return list(self.tensors)

    def file(self, name: str) -> Path | None:
        """Path of a tokenizer/config file in the checkpoint, or None when it is absent."""
        p = self.path / name
        return p if p.is_file() else None

    @property
    def tokenizer_model(self) -> Path | None:
        return self.file("tokenizer.model")

    @property
    def tokenizer_json(self) -> Path | None:
        return self.file("tokenizer.json")

    @property
    def tokenizer_config(self) -> Path | None:
        return self.file("tokenizer_config.json")

    @functools.cached_property
    def hparams(self) -> dict:
        """config.json as transformers reads it (defaults filled in, e.g. head_dim), like llama.cpp's
        converter does; falls back to the plain file when transformers does not know the model."""
        return load_hparams(self.path, self.config)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's elements as stored (BF16 as uint16), memory-mapped, read-only."""
        ref = self.tensors[name]
        with self._lock:
            mm = self._maps.get(ref.path)
            if mm is None:
                with open(ref.path, "rb") as f:
                    mm = self._maps[ref.path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(mm, dtype=DTYPES[ref.dtype], count=ref.n_elements, offset=ref.offset).reshape(ref.shape)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor's first axis as stored, read with pread (a private copy:
        resident memory stays the size of what callers hold, not of the file). Thread-safe."""
        ref = self.tensors[name]
        row = ref.nbytes // ref.shape[0] if ref.shape else ref.nbytes
        fd = self._fds.get(ref.path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(ref.path)
                if fd is None:
                    fd = self._fds[ref.path] = os.open(ref.path, os.O_RDONLY)
        want, buf = (stop - start) * row, bytearray()
        while len(buf) < want:  # pread may return short reads
            part = os.pread(fd, want - len(buf), ref.offset + start * row + len(buf))
            if not part:
                raise CheckpointError("file shrank while reading", path=str(ref.path), tensor=name)
            buf += part
        shape = (stop - start, *ref.shape[1:]) if ref.shape else ()
        return np.frombuffer(buf, dtype=DTYPES[ref.dtype]).reshape(shape)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as float32 (a copy; BF16 and F16 widened exactly)."""
        return to_float32(self.raw(name), self.tensors[name].dtype)

    def close(self) -> None:
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a caller still holds a view; the map closes when it is collected
                pass
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Widen stored elements to float32 exactly (BF16 is the top half of a float32)."""
    if dtype == "BF16":
        wide = raw.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    return raw.astype(np.float32)


def open_checkpoint(source: str | os.PathLike, *, revision: str | None = None) -> Checkpoint:
    """Open a checkpoint folder, or download the needed files of a Hub repo `org/name[@rev]`."""
    repo_id = None
    folder = Path(source).expanduser()
    if not folder.exists():
        text = str(source)
        if not REPO_ID.match(text):
            raise SourceError("no such checkpoint folder (and not a Hub repo id org/name[@revision])", path=text)
        repo_id, _, rev = text.partition("@")
        revision = revision or rev or None
        folder = _download(repo_id, revision)
    if not folder.is_dir():
        raise SourceError("not a checkpoint folder", path=str(folder))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SourceError("missing config.json", path=str(config_path))
    config = _read_json(config_path, SourceError)
    tensors = _index_tensors(folder)
    return Checkpoint(path=folder, config=config, tensors=tensors, repo_id=repo_id, revision=revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf_errors

    url = f"https://huggingface.co/{repo_id}" + (f"/tree/{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except hf_errors.GatedRepoError as e:
        raise SourceError("gated repository: accept its license on the Hub and set HF_TOKEN", url=url) from e
    except hf_errors.RepositoryNotFoundError as e:
        raise SourceError("no such Hub repository (or it is private: set HF_TOKEN)", url=url) from e
    except hf_errors.RevisionNotFoundError as e:
        raise SourceError(f"no revision {revision!r} in the Hub repository", url=url) from e
    except hf_errors.LocalEntryNotFoundError as e:
        raise SourceError("not in the local Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE?)",
                          url=url) from e
    except (hf_errors.HfHubHTTPError, OSError) as e:
        raise SourceError(f"download failed: {e}", url=url) from e


def _read_json(path: Path, error: type) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read JSON: {e}", path=str(path)) from e


def _shard_names(folder: Path) -> list[str]:
    """Shards in the converter's order: the index's files sorted, else model*.safetensors sorted."""
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = _read_json(index, CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError("index has no weight_map", path=str(index))
        names = sorted(set(weight_map.values()))
        for n in names:
            if not (folder / n).is_file():
                raise CheckpointError(f"index names shard {n} which is missing", path=str(folder / n))
        return names
    names = sorted(p.name for p in folder.glob("model*.safetensors"))
    if not names:
        raise SourceError("no model*.safetensors files (only safetensors checkpoints are read)", path=str(folder))
    return names


def _index_tensors(folder: Path) -> dict[str, TensorRef]:
    tensors: dict[str, TensorRef] = {}
    for shard in _shard_names(folder):
        for ref in read_header(folder / shard):
            if ref.name in tensors:
                raise CheckpointError(f"tensor {ref.name} is in two shards ({tensors[ref.name].path.name} and {shard})",
                                      path=str(folder / shard), tensor=ref.name)
            tensors[ref.name] = ref
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = _read_json(index, CheckpointError)["weight_map"]
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointError(f"{len(missing)} tensor(s) named in the index are in no shard, e.g. {missing[0]}",
                                  path=str(index), tensor=missing[0])
    return tensors


def read_header(path: Path) -> list[TensorRef]:
    """Parse and check one safetensors header; tensors come back sorted by name."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError("truncated safetensors file (no header length)", path=str(path))
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"corrupt or truncated safetensors header (length {n}, file {size} bytes)",
                                  path=str(path))
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"corrupt safetensors header: {e}", path=str(path)) from e
    base, refs = 8 + n, []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"corrupt safetensors header entry: {e}", path=str(path), tensor=name) from e
        if dtype not in DTYPES:
            raise CheckpointError(f"unsupported dtype {dtype}", path=str(path), tensor=name)
        want = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
        if end - start != want or start < 0:
            raise CheckpointError(f"data offsets [{start}, {end}] do not fit shape {list(shape)} of {dtype}",
                                  path=str(path), tensor=name)
        if base + end > size:
            raise CheckpointError(f"truncated: tensor data ends at byte {base + end}, file has {size}",
                                  path=str(path), tensor=name)
        refs.append(TensorRef(name, dtype, shape, path, base + start, want))
    return sorted(refs, key=lambda r: r.name)


# What transformers' config classes add to a llama-like config.json when it leaves them out
# (used only when transformers is not installed).
_DEFAULTS = {
    "llama": {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": 32000},
    "mistral": {"max_position_embeddings": 4096 * 32, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                "vocab_size": 32000},
    "gemma": {"max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": 256000,
              "head_dim": 256},
}


def _with_defaults(config: dict) -> dict:
    hp = dict(config)
    defaults = _DEFAULTS.get(hp.get("model_type", ""))
    if defaults is None:
        return hp
    for k, v in defaults.items():
        hp.setdefault(k, v)
    if hp.get("num_attention_heads"):
        hp.setdefault("num_key_value_heads", hp["num_attention_heads"])
        hp.setdefault("head_dim", hp["hidden_size"] // hp["num_attention_heads"])
    return hp


def load_hparams(folder: Path, config: dict) -> dict:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # transformers would print on import
    try:
        from transformers import AutoConfig
    except ImportError:
        hparams = _with_defaults(config)
    else:
        try:
            hparams = AutoConfig.from_pretrained(folder, trust_remote_code=False).to_dict()
        except Exception:  # unknown model_type etc.: the converter falls back to config.json too
            hparams = dict(config)
    if "text_config" in hparams:
        hparams = {**hparams, **hparams["text_config"]}
    return hparams
