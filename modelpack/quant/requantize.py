"""`requantize`: an F32/F16/BF16 GGUF -> a quantized GGUF, exactly as llama-quantize writes it.

llama-quantize copies every KV pair, then sets general.quantization_version and
general.file_type (which moves both to the end), drops split keys, writes the tensors sorted by
(layer, name) and pads each to 32 bytes. Tensors are converted one at a time from the memory
map, so memory stays near one tensor's float32 copy.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGML_QUANT_VERSION, GGUFValueType, GGUFWriter
from gguf import GGMLQuantizationType as T

from modelpack.errors import GGUFError, OutputExistsError, QuantizationError
from modelpack.gguf_info import read_gguf
from modelpack.progress import Progress, or_null

from . import mixes

_DROPPED = ("split.no", "split.count", "split.tensors.count")
_TAIL = ("general.quantization_version", "general.file_type")
_FLOAT_INPUTS = (T.F32, T.F16, T.BF16)


def _field_value(field):
    """(value, type, sub_type) of a GGUFReader field, ready for GGUFWriter.add_key_value."""
    vtype = field.types[0]
    sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
    return field.contents(), vtype, sub


_ELEMENT_BYTES = {T.F32: 4, T.F16: 2, T.BF16: 2}
CHUNK_ELEMENTS = 1 << 24  # float32 rows converted at a time: bounds memory to ~64 MiB per tensor


def _rows_f32(raw: np.ndarray, ttype: T) -> np.ndarray:
    """Rows of raw F32/F16/BF16 bytes [rows, row_bytes] as float32 [rows, ne0]."""
    if ttype == T.F32:
        return raw.view(np.float32)
    if ttype == T.F16:
        return raw.view(np.float16).astype(np.float32)
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # BF16: top half of a float32


def _write_tensor(fin, fout, t, ttype: T, task, **kw) -> int:
    """Stream one input tensor to `fout` as `ttype`, a few MiB of rows at a time; returns bytes.

    Rows are read with plain reads rather than through the memory map, so the process keeps only
    one chunk of the input resident (the map would count the whole input file in its RSS).
    """
    from . import quantize  # the package function (avoids a cycle at import time)

    ne0 = int(t.shape[0])
    row_in = ne0 * _ELEMENT_BYTES[t.tensor_type]
    rows = int(t.n_bytes) // row_in
    block, type_size = GGML_QUANT_SIZES[ttype]
    step = max(1, CHUNK_ELEMENTS // ne0)
    written = 0
    fin.seek(int(t.data_offset))
    for r in range(0, rows, step):
        n = min(step, rows - r)
        raw = np.fromfile(fin, np.uint8, n * row_in).reshape(n, row_in)
        if ttype == t.tensor_type:
            out = raw
        else:
            try:
                out = quantize(_rows_f32(raw, t.tensor_type), ttype, tensor_name=t.name, **kw)
            except QuantizationError as err:
                at = None if err.block is None else err.block + r * (ne0 // block)
                raise QuantizationError(f"{ttype.name} block {at} has an Inf/NaN scale", tensor=t.name,
                                        block=at) from err
        out.tofile(fout)
        written += out.nbytes
        task.advance(n * row_in)
    return written


def _align(fout, alignment: int = 32) -> None:
    pad = -fout.tell() % alignment
    if pad:
        fout.write(bytes(pad))


def requantize(input_gguf, output, mix, *, force: bool = False, threads: int | None = None,
               progress: Progress | None = None, backend: str = "auto", device: str = "auto") -> dict:
    """Quantize `input_gguf` (F32/F16/BF16 tensors) to `output` with `mix` (name or Mix).

    Returns a summary: output path, mix, file_type, tensor count, bytes in and out, seconds.
    """
    from . import resolve_backend

    started = time.perf_counter()
    mix = mixes.parse_mix(mix) if isinstance(mix, str) else mix
    resolve_backend(backend, device)  # an unusable --device fails before any work
    input_gguf, output = Path(input_gguf), Path(output)
    if output.exists() and not force:
        raise OutputExistsError("output exists (use --force to overwrite)", path=output)
    reader = read_gguf(input_gguf)

    arch_field = reader.get_field("general.architecture")
    arch = arch_field.contents() if arch_field is not None else "llama"
    block_count = reader.get_field(f"{arch}.block_count")
    n_layer = int(block_count.contents()) if block_count is not None else 0
    heads = [reader.get_field(f"{arch}.attention.{k}") for k in ("head_count", "head_count_kv")]
    n_gqa = mixes.n_gqa_of(*(f.contents() if f is not None else None for f in heads))

    by_name = {t.name: t for t in reader.tensors}
    for t in reader.tensors:
        if t.tensor_type not in _FLOAT_INPUTS:
            raise GGUFError(f"requantizing from {t.tensor_type.name} is not supported; give an F32/F16/BF16 GGUF",
                            path=input_gguf, tensor=t.name)
    shapes = [(t.name, tuple(int(d) for d in t.shape)) for t in reader.tensors]
    targets = mixes.tensor_types(shapes, mix, n_layer=n_layer, arch=arch, n_gqa=n_gqa)
    order = mixes.quantize_order(by_name)
    for name in order:  # tensors llama-quantize leaves alone keep their input type
        if not mixes.allows_quantization(name, by_name[name].shape):
            targets[name] = by_name[name].tensor_type

    writer = GGUFWriter(None, arch)
    kv = writer.kv_data[0]
    kv.clear()
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in _DROPPED or field.name in _TAIL:
            continue
        writer.add_key_value(field.name, *_field_value(field))
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_file_type(mix.file_type)

    for name in order:
        t = by_name[name]
        ttype = targets[name]
        block, type_size = GGML_QUANT_SIZES[ttype]
        ne = [int(d) for d in t.shape]
        nbytes = int(np.prod(ne[1:], dtype=np.int64)) * (ne[0] // block) * type_size
        writer.add_tensor_info(name, list(reversed(ne)), np.dtype(np.float32), nbytes, raw_dtype=ttype)

    bytes_in = sum(int(t.n_bytes) for t in reader.tensors)
    bytes_out = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    os.close(fd)
    try:
        writer.write_header_to_file(Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fout = writer.fout[0]
        with open(input_gguf, "rb") as fin, or_null(progress).task(f"quantize {mix.name}", total=bytes_in) as task:
            for name in order:  # data aligned to 32 bytes, each tensor zero-padded (as GGUFWriter does)
                _align(fout)
                bytes_out += _write_tensor(fin, fout, by_name[name], targets[name], task,
                                           backend=backend, device=device, threads=threads)
            _align(fout)
        writer.close()
        os.replace(tmp, output)
    except BaseException:
        writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return {
        "output": str(output),
        "mix": mix.name,
        "file_type": mix.file_type,
        "tensors": len(order),
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "seconds": round(time.perf_counter() - started, 3),
    }
