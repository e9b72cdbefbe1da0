#!/usr/bin/env python3
"""Quantization speed: modelpack's kernels vs llama.cpp's C quantizer, and an end-to-end build.

Part 1 (always): each type's throughput on one core, in MB/s of float32 input, for the numba
kernels, the numpy reference and llama.cpp's ggml_quantize_chunk (through ctypes, from the
library llama-cpp-python ships), checking that all three write the same bytes.

Part 2 (--e2e): on one synthesized checkpoint with realistic shapes (hidden 4096, ffn 14336,
vocab 32002, --layers layers), `modelpack convert --quant Q4_K_M` against convert_hf_to_gguf.py
(bf16) + llama.cpp's quantizer (llama_model_quantize, the function behind llama-quantize).
Also `modelpack quantize` on llama.cpp's bf16 file against llama.cpp's quantizer alone.
Reports wall time, CPU time and peak RSS of each process, and whether the outputs are identical.

    python benchmarks/bench_quant.py [--rows 512] [--e2e --layers 2 --convert-script PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def weights(rows: int, n: int = 4096) -> np.ndarray:
    """BF16-rounded N(0, 0.02) with a few outliers, like real checkpoint weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, n), dtype=np.float32) * np.float32(0.02)
    x.flat[rng.integers(0, x.size, x.size // 2000)] *= np.float32(20.0)
    u = x.view(np.uint32)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def bench_kernels(rows: int, repeat: int, numpy_rows: int) -> list[dict]:
    from modelpack.quant import fast, reference

    try:
        from modelpack.llamacpp import ggml_quantize
    except ImportError:  # llama-cpp-python missing
        ggml_quantize = None
    x = weights(rows)
    mb = x.nbytes / 1e6
    results = []
    for name in TYPES:
        qtype = T[name]
        bs = 256 if name.endswith("K") else 32
        blocks = x.reshape(-1, bs)
        fast.quantize_blocks(blocks[: 8 * 64], qtype)  # compile / load the cache
        ours = fast.quantize_blocks(blocks, qtype, threads=1)
        row = {"type": name, "numba_MBps": mb / best_of(lambda: fast.quantize_blocks(blocks, qtype, threads=1), repeat)}
        threads = fast.default_threads()
        row[f"numba_{threads}thr_MBps"] = mb / best_of(
            lambda: fast.quantize_blocks(blocks, qtype, threads=threads), repeat)
        sub = x[:numpy_rows].reshape(-1, bs)
        row["numpy_MBps"] = sub.nbytes / 1e6 / best_of(lambda: reference.quantize_blocks(sub, qtype), 1)
        same = np.array_equal(reference.quantize_blocks(sub, qtype), ours[: sub.shape[0]])
        if ggml_quantize is not None:
            c = ggml_quantize(x, qtype)
            row["C_MBps"] = mb / best_of(lambda: ggml_quantize(x, qtype), repeat)
            row["numba_vs_C"] = row["numba_MBps"] / row["C_MBps"]
            same = same and np.array_equal(c.reshape(ours.shape), ours)
        row["identical"] = bool(same)
        results.append(row)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return results


def measured(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run a process; wall seconds, CPU seconds (user+sys) and peak RSS (MiB) of that process."""
    t = time.perf_counter()
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}; see {log}")
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_MiB": round(ru.ru_maxrss / 1024, 1)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


LLAMA_QUANTIZE = """
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = 15  # Q4_K_M
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))
"""


def bench_e2e(layers: int, convert_script: str | None, workdir: Path) -> dict:
    ckpt = workdir / "ckpt"
    log = workdir / "log.txt"
    tokenizer = ROOT / "tests" / "data" / "tokenizers" / "mistral-7b-v0.1.tokenizer.model"
    if not ckpt.exists():
        subprocess.run([sys.executable, str(ROOT / "tests" / "make_ckpt.py"), str(ckpt), "--arch", "mistral",
                        "--tokenizer", str(tokenizer), "--hidden", "4096", "--ffn", "14336", "--heads", "32",
                        "--kv-heads", "8", "--layers", str(layers), "--shards", "2"], check=True)
    out = {"layers": layers}
    ours = workdir / "modelpack-Q4_K_M.gguf"
    out["modelpack"] = measured([sys.executable, "-m", "modelpack", "convert", str(ckpt), "-o", str(ours),
                                 "--quant", "Q4_K_M", "--force", "-q"], log)
    print("modelpack convert --quant Q4_K_M:", out["modelpack"], flush=True)
    if not convert_script:
        print("llama.cpp side skipped (no --convert-script / LLAMA_CONVERT_SCRIPT)")
        return out
    bf16, ref = workdir / "llama-bf16.gguf", workdir / "llama-Q4_K_M.gguf"
    conv = measured([sys.executable, convert_script, str(ckpt), "--outfile", str(bf16), "--outtype", "bf16"], log)
    quant = measured([sys.executable, "-c", LLAMA_QUANTIZE, str(bf16), str(ref)], log)
    out["llama_convert"], out["llama_quantize"] = conv, quant
    out["llama_total"] = {"wall_s": round(conv["wall_s"] + quant["wall_s"], 2),
                          "cpu_s": round(conv["cpu_s"] + quant["cpu_s"], 2),
                          "peak_rss_MiB": max(conv["peak_rss_MiB"], quant["peak_rss_MiB"])}
    out["wall_ratio"] = round(out["modelpack"]["wall_s"] / out["llama_total"]["wall_s"], 3)
    out["identical"] = sha256(ours) == sha256(ref)
    print("llama.cpp convert + quantize:", out["llama_total"], "identical:", out["identical"], flush=True)
    # the requantize step alone: `modelpack quantize` on llama.cpp's own bf16 file
    requant = workdir / "modelpack-requant-Q4_K_M.gguf"
    out["modelpack_quantize"] = measured([sys.executable, "-m", "modelpack", "quantize", str(bf16), str(requant),
                                          "Q4_K_M", "--force", "-q"], log)
    out["modelpack_quantize"]["identical"] = sha256(requant) == sha256(ref)
    print("modelpack quantize (bf16 GGUF -> Q4_K_M):", out["modelpack_quantize"], "vs llama quantize:",
          quant, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=512, help="rows of 4096 weights per kernel run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--numpy-rows", type=int, default=64)
    ap.add_argument("--no-kernels", action="store_true")
    ap.add_argument("--e2e", action="store_true", help="also time the end-to-end Q4_K_M build")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--convert-script", default=os.environ.get("LLAMA_CONVERT_SCRIPT"),
                    help="llama.cpp's convert_hf_to_gguf.py (its folder's gguf-py is used)")
    ap.add_argument("--workdir", default=None, help="keep the checkpoint and outputs here")
    ap.add_argument("--json", default=None, help="write all results to this file")
    args = ap.parse_args()
    results: dict = {"cpus": os.cpu_count()}
    if not args.no_kernels:
        results["kernels"] = bench_kernels(args.rows, args.repeat, args.numpy_rows)
    if args.e2e:
        if args.workdir:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            results["e2e"] = bench_e2e(args.layers, args.convert_script, Path(args.workdir))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                results["e2e"] = bench_e2e(args.layers, args.convert_script, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
