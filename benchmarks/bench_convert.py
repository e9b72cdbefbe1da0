#!/usr/bin/env python3
"""Time and peak memory of `modelpack convert` beside llama.cpp's convert_hf_to_gguf.py, same run.

The checkpoint has realistic layer shapes (hidden 4096, ffn 14336, vocab 32002, 32/8 heads, BF16)
with only 2 layers, written by tests/make_ckpt.py. llama.cpp's script is not part of modelpack:
point LLAMA_CONVERT_HF (or --llama-convert) at convert_hf_to_gguf.py from a llama.cpp checkout,
e.g. the one inside the llama-cpp-python sdist (vendor/llama.cpp/); it needs torch.

    python benchmarks/bench_convert.py --llama-convert /path/to/convert_hf_to_gguf.py [--outtypes bf16,f16]

Each tool runs as its own process; peak RSS is that process's ru_maxrss (os.wait4). The page cache
is warmed by reading the checkpoint once first, so both tools start from the same state. After the
runs, the tensors of both outputs are compared (sha256 of each tensor's bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPM = ROOT / "tests" / "data" / "tokenizers" / "mistral-7b-v0.1.tokenizer.model"
SHAPE = ["--arch", "mistral", "--hidden", "4096", "--ffn", "14336", "--layers", "2", "--heads", "32",
         "--kv-heads", "8", "--shards", "2", "--seed", "0", "--tokenizer", str(SPM)]


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def tensor_digests(path: Path) -> dict:
    """Per-tensor sha256, computed in a child process: the benchmark process itself must stay small,
    since a forked child inherits its parent's peak RSS as a starting point on Linux."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from gguf_digest import digest; "
            "print(json.dumps(digest(sys.argv[2])['tensors']))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests"), str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama-convert", default=os.environ.get("LLAMA_CONVERT_HF"),
                   help="path to llama.cpp's convert_hf_to_gguf.py (env LLAMA_CONVERT_HF)")
    p.add_argument("--outtypes", default="bf16,f16")
    p.add_argument("--mixes", default="", help="also time modelpack --quant MIX (llama.cpp has no one-step "
                   "equivalent to compare with), e.g. Q4_K_M")
    p.add_argument("--workdir", default=None, help="where to write the checkpoint and outputs (default: a temp dir)")
    p.add_argument("--threads", type=int, default=None, help="modelpack worker threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-convert-"))
    ckpt = work / "ckpt"
    if not (ckpt / "config.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "tests" / "make_ckpt.py"), str(ckpt), *SHAPE], check=True,
                       stdout=subprocess.DEVNULL)
    size = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    for f in ckpt.glob("*.safetensors"):  # warm the page cache for both tools alike
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass

    rows = []
    for outtype in a.outtypes.split(","):
        ours = work / f"modelpack-{outtype}.gguf"
        cmd = [sys.executable, "-m", "modelpack", "convert", str(ckpt), "-o", str(ours), "--outtype", outtype,
               "--force", "-q"] + (["--threads", str(a.threads)] if a.threads else [])
        sec, rss = timed(cmd)
        rows.append({"tool": "modelpack", "outtype": outtype, "seconds": round(sec, 2), "peak_rss_mib": round(rss)})
        if a.llama_convert:
            theirs = work / f"llama-{outtype}.gguf"
            sec, rss = timed([sys.executable, a.llama_convert, str(ckpt), "--outfile", str(theirs),
                              "--outtype", outtype])
            rows.append({"tool": "convert_hf_to_gguf.py", "outtype": outtype, "seconds": round(sec, 2),
                         "peak_rss_mib": round(rss)})
            rows[-1]["identical_tensors"] = rows[-2]["identical_tensors"] = \
                tensor_digests(ours) == tensor_digests(theirs)
            theirs.unlink()
        ours.unlink()

    for mix in filter(None, a.mixes.split(",")):
        ours = work / f"modelpack-{mix}.gguf"
        cmd = [sys.executable, "-m", "modelpack", "convert", str(ckpt), "-o", str(ours), "--quant", mix, "--force",
               "-q"] + (["--threads", str(a.threads)] if a.threads else [])
        sec, rss = timed(cmd)
        rows.append({"tool": "modelpack --quant", "outtype": mix, "seconds": round(sec, 2), "peak_rss_mib": round(rss)})
        ours.unlink()

    result = {"checkpoint_bytes": size, "cpus": os.cpu_count(), "runs": rows}
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"checkpoint: {size / 2**30:.2f} GiB BF16 (hidden 4096, ffn 14336, vocab 32002, 2 layers), "
          f"{os.cpu_count()} CPUs")
    print(f"{'tool':<24} {'outtype':<8} {'seconds':>8} {'GiB/s':>6} {'peak RSS MiB':>13}  identical")
    for r in rows:
        print(f"{r['tool']:<24} {r['outtype']:<8} {r['seconds']:>8.2f} {size / 2**30 / r['seconds']:>6.2f} "
              f"{r['peak_rss_mib']:>13}  {r.get('identical_tensors', '-')}")


if __name__ == "__main__":
    main()
