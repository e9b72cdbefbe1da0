"""The plan: every GGUF key/value and, per tensor, its GGUF name, source, transform and stored type.

Built from a Checkpoint and an architecture table before a single byte is written, so every input
error (unsupported architecture, missing tokenizer, a shape that disagrees with config.json, an
unknown tensor) is reported with nothing on disk. Facts follow llama.cpp's convert_hf_to_gguf.py
(float outtypes) and llama-quantize (quant mixes); see ../shared/spec/gguf-conversion.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import gguf
import numpy as np

from modelpack.checkpoint import Checkpoint, TensorRef
from modelpack.convert.arch import FILE_TYPE, HP, Arch, get_arch, head_dim, rope_parameters
from modelpack.errors import CheckpointError, SourceError, UnknownQuantError

Q = gguf.GGMLQuantizationType
T = gguf.MODEL_TENSOR

# --outtype -> (general.file_type, the type of every tensor that is not forced to F32)
OUTTYPES: dict[str, tuple[gguf.LlamaFileType, Q]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}
SOURCE_TYPES = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16}
DROPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
# Tensors the converter always keeps in F32 (llama.cpp expects them so).
F32_KINDS = {getattr(T, k) for k in (
    "FFN_GATE_INP", "FFN_GATE_INP_SHEXP", "POS_EMBD", "TOKEN_TYPES", "SSM_CONV1D", "SHORTCONV_CONV",
    "TIME_MIX_FIRST", "TIME_MIX_W1", "TIME_MIX_W2", "TIME_MIX_DECAY_W1", "TIME_MIX_DECAY_W2",
    "TIME_MIX_LERP_FUSED", "POSNET_NORM1", "POSNET_NORM2", "V_ENC_EMBD_POS", "A_ENC_EMBD_POS",
    "ALTUP_CORRECT_COEF", "ALTUP_PREDICT_COEF", "SSM_CONV1D_Q", "SSM_CONV1D_K", "SSM_CONV1D_V", "INDEXER_PROJ",
) if hasattr(T, k)}


@dataclass
class TensorPlan:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order ([rows, n_per_row]); GGUF stores it reversed
    out_type: Q
    nbytes: int
    src: TensorRef | None = None  # None for generated tensors (data holds them)
    data: np.ndarray | None = None
    rows: np.ndarray | None = None  # row order (rotary permutation), applied to the source rows
    add: float | None = None
    stage: Q | None = None  # with a quant mix: the 16-bit type the auto conversion would have stored


@dataclass
class Plan:
    checkpoint: Checkpoint
    arch: Arch
    hparams: dict
    writer: gguf.GGUFWriter  # holds the key/values and tensor infos, in file order
    tensors: list[TensorPlan]
    file_type: int
    file_type_name: str
    n_params: int


def tensor_nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape[:-1]) * (shape[-1] // block) * size if shape else size


def auto_outtype(refs: list[TensorRef]) -> str:
    """The converter's --outtype auto: the first 2-D+ BF16/F16 tensor decides; else F16."""
    for ref in refs:
        if len(ref.shape) >= 2 and ref.dtype in ("BF16", "F16"):
            return ref.dtype.lower()
    return "f16"


def _converted_refs(checkpoint: Checkpoint, arch: Arch) -> list[TensorRef]:
    return [r for name, r in checkpoint.tensors.items()
            if name not in arch.drop and not name.endswith(DROPPED_SUFFIXES)]


def _hf_name(name: str) -> str:
    return name.replace("language_model.", "") if "language_model." in name else name


def _stored_type(name: str, kind, shape: tuple[int, ...], default: Q) -> Q:
    """The converter's per-tensor type: 1-D, norms, biases and a few kinds stay F32."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or kind in F32_KINDS or not name.endswith(".weight"):
        return Q.F32
    qtype = default
    if qtype not in (Q.F32, Q.F16, Q.BF16) and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
        return Q.F16  # gguf.quants raises QuantError, the converter falls back to F16
    return qtype


def _check_shape(arch: Arch, hp: dict, kind, ref: TensorRef, gguf_name: str, config_path: str) -> None:
    fn = arch.shapes.get(kind)
    if fn is None or not gguf_name.endswith(".weight"):
        return
    try:
        want = tuple(fn(hp))
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise SourceError(f"config.json lacks a hyperparameter needed to check tensor shapes: {e}",
                          path=config_path) from e
    if tuple(ref.shape) != want:
        raise CheckpointError(f"shape {list(ref.shape)} disagrees with config.json (expected {list(want)})",
                              path=str(ref.path), tensor=ref.name)


def llama3_rope_freqs(hp: dict) -> np.ndarray | None:
    """LlamaModel.generate_extra_tensors: per-frequency factors for llama3 rope scaling (float32)."""
    rp = rope_parameters(hp)
    full = rp.get("full_attention", rp)
    if str(full.get("rope_type", "")).lower() != "llama3":
        return None
    f32 = np.float32
    base, dim = full.get("rope_theta", 10000.0), head_dim(hp)
    freqs = f32(1.0) / (f32(base) ** (np.arange(0, dim, 2, dtype=f32) / f32(dim)))
    factor = full.get("factor", 8.0)
    low, high = full.get("low_freq_factor", 1.0), full.get("high_freq_factor", 4.0)
    old_ctx = full.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wl = f32(2 * math.pi) / freq
        if wl < f32(high_wl):
            out.append(1.0)
        elif wl > f32(low_wl):
            out.append(factor)
        else:
            smooth = (f32(old_ctx) / wl - f32(low)) / f32(high - low)
            out.append(f32(1) / ((f32(1) - smooth) / f32(factor) + smooth))
    return np.array(out, dtype=f32)


def _add_kv(writer: gguf.GGUFWriter, arch: Arch, hp: dict, file_type: int, config_path: str) -> None:
    for entry in arch.kv:
        if entry is FILE_TYPE:
            writer.add_file_type(file_type)
        elif isinstance(entry, HP):
            key = next((k for k in entry.keys if k in hp and hp[k] is not None), None)
            if key is None:
                if entry.required:
                    raise SourceError(f"config.json has none of {', '.join(entry.keys)}", path=config_path)
                continue
            getattr(writer, entry.method)(hp[key])
        else:
            entry(writer, hp)


def _metadata(writer: gguf.GGUFWriter, checkpoint: Checkpoint, n_params: int) -> None:
    """general.* from the model card, as the converter writes them (names are informational)."""
    meta = gguf.Metadata.load(None, checkpoint.path, None, n_params)
    if meta.sampling_penalty_repeat is None:  # the converter's newer gguf-py also reads the HF name
        gen = gguf.Metadata.load_generation_config(checkpoint.path)
        meta.sampling_penalty_repeat = gen.get("repetition_penalty") if gen else None
    if checkpoint.repo_id:
        meta.name = checkpoint.repo_id
    if meta.name is None:
        meta.name = checkpoint.path.name
    if meta.size_label is None and n_params > 0:
        meta.size_label = gguf.size_label(n_params, n_params, 0, 0)
    meta.set_gguf_meta_model(writer)


def add_extra_kv(writer: gguf.GGUFWriter, extra_kv: dict[str, Any]) -> None:
    """Caller-supplied keys (e.g. general.license): str, bool, int, float or a list of str."""
    V = gguf.GGUFValueType
    for key, value in extra_kv.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], V):
            writer.add_key_value(key, value[0], value[1])
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value) if 0 <= value < 2**32 else writer.add_int64(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, (list, tuple)):
            writer.add_array(key, list(value))
        else:
            raise TypeError(f"extra_kv {key}: unsupported value type {type(value).__name__}")


def build_plan(checkpoint: Checkpoint, *, outtype: str = "auto", quant: str | None = None,
               extra_kv: dict[str, Any] | None = None) -> Plan:
    config_path = str(checkpoint.path / "config.json")
    arch = get_arch(checkpoint.architecture, path=config_path)
    hp = checkpoint.hparams
    refs = _converted_refs(checkpoint, arch)
    auto = auto_outtype(refs)
    if quant is not None and outtype == "q8_0":
        raise UnknownQuantError("--outtype q8_0 cannot be combined with --quant (use --quant Q8_0)")
    if outtype == "auto":  # with a mix: llama-quantize reads what the auto conversion wrote
        outtype = auto
    if outtype not in OUTTYPES:
        raise UnknownQuantError(f"unknown outtype {outtype!r}; choose from auto, {', '.join(OUTTYPES)}")
    ftype, default = OUTTYPES[outtype]

    block_count = next((hp[k] for k in ("n_layers", "num_hidden_layers", "n_layer", "num_layers") if k in hp), None)
    if block_count is None:
        raise SourceError("config.json has no layer count (num_hidden_layers)", path=config_path)
    name_map = gguf.get_tensor_name_map(arch.gguf_arch, block_count)

    tensors: list[TensorPlan] = []
    if arch.gguf_arch == gguf.MODEL_ARCH.LLAMA and (freqs := llama3_rope_freqs(hp)) is not None:
        name = gguf.TENSOR_NAMES[T.ROPE_FREQS] + ".weight"
        tensors.append(TensorPlan(name, freqs.shape, Q.F32, freqs.nbytes, data=freqs))
    for ref in refs:
        if ref.dtype not in SOURCE_TYPES:
            raise CheckpointError(f"unsupported dtype {ref.dtype} (only F32, F16, BF16 weights)",
                                  path=str(ref.path), tensor=ref.name)
        hf_name = _hf_name(ref.name)
        found = name_map.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise CheckpointError(f"no GGUF name for this tensor in architecture {arch.name}",
                                  path=str(ref.path), tensor=ref.name)
        kind, gguf_name = found
        _check_shape(arch, hp, kind, ref, gguf_name, config_path)
        transform = arch.transform(hf_name)
        rows = transform.rows(ref.shape, hp) if transform and transform.rows else None
        qtype = _stored_type(gguf_name, kind, ref.shape, default)
        tensors.append(TensorPlan(gguf_name, tuple(ref.shape), qtype, tensor_nbytes(ref.shape, qtype), src=ref,
                                  rows=rows, add=transform.add if transform else None))
    if len({t.name for t in tensors}) != len(tensors):
        seen: set[str] = set()
        dup = next(t for t in tensors if t.name in seen or seen.add(t.name))
        raise CheckpointError(f"two checkpoint tensors map to GGUF tensor {dup.name}",
                              path=str(dup.src.path) if dup.src else None, tensor=dup.src.name if dup.src else None)

    file_type, file_type_name = int(ftype), outtype.upper()
    if quant is not None:
        _mixes().parse_mix(quant)  # an unknown mix fails before the vocabulary is read
    n_params = sum(math.prod(t.shape) for t in tensors)

    writer = gguf.GGUFWriter(None, arch.name)
    _quiet = logging.getLogger("gguf")
    level = _quiet.level
    _quiet.setLevel(logging.ERROR)  # gguf logs duplicate keys the converter also rewrites
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        _metadata(writer, checkpoint, n_params)
        _add_kv(writer, arch, hp, int(ftype), config_path)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        arch.vocab(checkpoint, writer, hp)
        _stable_template_names(writer)
        if extra_kv:
            add_extra_kv(writer, extra_kv)
        if quant is not None:  # llama-quantize moves these two to the end
            n_gqa = _mixes().n_gqa_of(*(_kv_value(writer, f"{arch.name}.attention.{k}")
                                        for k in ("head_count", "head_count_kv")))
            file_type, file_type_name, tensors = _apply_mix(tensors, quant, block_count, arch.name, n_gqa)
            kv = writer.kv_data[0]
            kv.pop(gguf.Keys.General.QUANTIZATION_VERSION)
            kv.pop(gguf.Keys.General.FILE_TYPE)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_file_type(file_type)
        for t in tensors:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.out_type)
    finally:
        _quiet.setLevel(level)
    return Plan(checkpoint, arch, hp, writer, tensors, file_type, file_type_name, n_params)


def _stable_template_names(writer: gguf.GGUFWriter) -> None:
    """gguf lists named chat templates from a set, so the converter's order changes with Python's hash
    seed from run to run; we list them in tokenizer_config.json's order (their keys' order) instead."""
    kv = writer.kv_data[0]
    names = kv.get(gguf.Keys.Tokenizer.CHAT_TEMPLATES)
    if names is None:
        return
    prefix = gguf.Keys.Tokenizer.CHAT_TEMPLATE_N.format(name="")
    ordered = [k[len(prefix):] for k in kv if k.startswith(prefix)]
    names.value = [n for n in ordered if n in names.value] + [n for n in names.value if n not in ordered]


def _mixes():
    try:
        from modelpack.quant import mixes
    except ImportError as e:
        raise UnknownQuantError(f"quantization is not available in this build ({e})") from e
    return mixes


def _kv_value(writer: gguf.GGUFWriter, key: str):
    v = writer.kv_data[0].get(key)
    return None if v is None else v.value


def _apply_mix(tensors: list[TensorPlan], quant: str, n_layer: int, arch: str,
               n_gqa: int | None) -> tuple[int, str, list[TensorPlan]]:
    """Target types from the mix rules, in llama-quantize's order; inputs as the auto file stores them.
    `n_gqa` comes from the head counts written to the key/values, as llama-quantize reads them."""
    mixes = _mixes()
    mix = mixes.parse_mix(quant)
    by_name = {t.name: t for t in tensors}
    targets = mixes.tensor_types([(t.name, tuple(reversed(t.shape))) for t in tensors], mix, n_layer=n_layer,
                                 arch=arch, n_gqa=n_gqa)
    planned = []
    for name in mixes.quantize_order(list(by_name)):
        t = by_name[name]
        target = Q(targets.get(name, t.out_type))
        stage = t.out_type if t.out_type in (Q.F16, Q.BF16) else None
        planned.append(TensorPlan(t.name, t.shape, target, tensor_nbytes(t.shape, target), src=t.src, data=t.data,
                                  rows=t.rows, add=t.add, stage=stage))
    return int(mix.file_type), mix.name, planned
