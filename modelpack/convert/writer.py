"""Stream a Plan into a GGUF: header, key/values and tensor infos via gguf.GGUFWriter, then tensor
data row-chunk by row-chunk, produced on a thread pool and written strictly in order.

Only `write()` (and `flush()`) is called on the output, never `seek()`, so the output may be a
pipe or a file object that hashes while it writes. Memory stays bounded by the chunks in flight,
whatever the size of the model.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
from typing import BinaryIO, Callable, Iterator

import gguf
import numpy as np
from gguf.gguf_writer import WriterState

from modelpack.checkpoint import to_float32
from modelpack.convert.plan import SOURCE_TYPES, Plan, TensorPlan
from modelpack.errors import CheckpointError
from modelpack.progress import Progress, or_null

Q = gguf.GGMLQuantizationType
CHUNK_ELEMENTS = 1 << 23  # ~8M values (32 MB as float32) per unit of work
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)


class _CountingWriter:
    """Forwards writes and counts bytes, so gguf's writer and the padding logic never need seek/tell."""

    def __init__(self, fout: BinaryIO) -> None:
        self.fout, self.pos = fout, 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.fout.write(data)
        self.pos += n
        return n

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        flush = getattr(self.fout, "flush", None)
        if flush is not None:
            flush()

    def pad(self, align: int) -> None:
        if self.pos % align:
            self.write(bytes(align - self.pos % align))


def count_nonfinite(values: np.ndarray, dtype: str) -> int:
    """NaN/Inf count on stored elements: BF16 bits are checked without widening."""
    if dtype == "BF16":
        return int(np.count_nonzero((values & 0x7F80) == 0x7F80))
    return int(values.size - np.count_nonzero(np.isfinite(values)))


def _stage(x: np.ndarray, stage: Q) -> np.ndarray:
    """Round float32 values to the 16-bit type the auto conversion stores, then widen back."""
    if stage == Q.F16:
        return x.astype(np.float16).astype(np.float32)
    return gguf.quants.dequantize(gguf.quants.quantize(x, Q.BF16), Q.BF16)


def _chunks(t: TensorPlan) -> Iterator[tuple[int, int]]:
    rows = t.shape[0] if len(t.shape) >= 2 else 1
    per_row = max(1, int(np.prod(t.shape[1:])) if len(t.shape) >= 2 else int(np.prod(t.shape)))
    step = max(1, CHUNK_ELEMENTS // per_row)
    for a in range(0, rows, step):
        yield a, min(rows, a + step)


class _Producer:
    def __init__(self, plan: Plan, *, allow_nonfinite: bool, device: str) -> None:
        self.plan, self.allow_nonfinite, self.device = plan, allow_nonfinite, device
        self._quantize: Callable | None = None

    def quantizer(self) -> Callable:
        if self._quantize is None:
            from modelpack.quant import quantize

            self._quantize = quantize
        return self._quantize

    def _source_rows(self, t: TensorPlan, a: int, b: int) -> np.ndarray:
        ck, ref = self.plan.checkpoint, t.src
        if len(ref.shape) < 2:  # one chunk; a bias may still be permuted
            whole = ck.read_rows(ref.name, 0, ref.shape[0] if ref.shape else 1)
            return whole if t.rows is None else whole[t.rows]
        if t.rows is None:
            return ck.read_rows(ref.name, a, b)
        lo, hi = int(t.rows[a:b].min()), int(t.rows[a:b].max()) + 1  # permutations stay within heads
        return ck.read_rows(ref.name, lo, hi)[t.rows[a:b] - lo]

    def __call__(self, t: TensorPlan, a: int, b: int) -> np.ndarray:
        if t.src is None:  # generated tensor (e.g. rope_freqs)
            return gguf.quants.quantize(t.data, t.out_type)
        ref = t.src
        raw = self._source_rows(t, a, b)
        bad = count_nonfinite(raw, ref.dtype)
        if bad and not self.allow_nonfinite:
            total = count_nonfinite(self.plan.checkpoint.raw(ref.name), ref.dtype)
            raise CheckpointError(f"{total} NaN/Inf value(s) in a weight (use --allow-nonfinite to convert anyway)",
                                  path=str(ref.path), tensor=ref.name)
        src_type = SOURCE_TYPES[ref.dtype]
        # Stored bytes pass through untouched when nothing changes them (rows reordering is exact).
        if t.add is None and t.out_type == src_type and (t.stage is None or t.stage == src_type) and not bad:
            return np.ascontiguousarray(raw)
        if t.add is not None and ref.dtype == "F16":  # the converter adds in the source's precision
            x = (raw + np.float16(t.add)).astype(np.float32)
        else:
            x = to_float32(raw, ref.dtype)
            if t.add is not None:
                x += np.float32(t.add)
        if t.stage is not None and (t.stage != src_type or t.add is not None or bad):
            x = _stage(x, t.stage)
        if t.out_type in FLOAT_TYPES or t.out_type == Q.Q8_0 and t.stage is None:
            return gguf.quants.quantize(x, t.out_type)
        return self.quantizer()(x.reshape(-1, x.shape[-1]), t.out_type, device=self.device, tensor_name=t.name)


def write_plan(plan: Plan, fout: BinaryIO, *, allow_nonfinite: bool = False, device: str = "auto",
               threads: int | None = None, progress: Progress | None = None) -> int:
    """Write the whole GGUF to `fout`; returns the number of bytes written."""
    out = _CountingWriter(fout)
    w = plan.writer
    w.fout, w.state = [out], WriterState.EMPTY  # a stream we own, instead of a path gguf would open
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    out.pad(w.data_alignment)
    w.fout = None

    produce = _Producer(plan, allow_nonfinite=allow_nonfinite, device=device)
    work = [(t, a, b, b == (t.shape[0] if len(t.shape) >= 2 else 1)) for t in plan.tensors for a, b in _chunks(t)]
    workers = max(1, threads or os.cpu_count() or 1)
    total = sum(t.nbytes for t in plan.tensors)
    with or_null(progress).task("Converting", total=total, unit="B") as task, \
            cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelpack-convert") as pool:
        pending: collections.deque = collections.deque()
        items = iter(work)
        try:
            while True:
                while len(pending) < 2 * workers:
                    item = next(items, None)
                    if item is None:
                        break
                    pending.append((item, pool.submit(produce, item[0], item[1], item[2])))
                if not pending:
                    break
                (t, _, _, last), future = pending.popleft()
                data = future.result()
                out.write(memoryview(data).cast("B"))
                task.advance(data.nbytes)
                if last:
                    out.pad(w.data_alignment)
        except BaseException:
            for _, f in pending:
                f.cancel()
            raise
    out.flush()
    return out.pos
