"""Push/pull throughput and peak RSS for a 1 GiB bundle against a local docker-registry.

Beside them, in the same run and against the same registry: a plain single-PUT upload of the
same bytes with requests (POST for a session, then one PUT ?digest= streaming the file; the
digest is computed beforehand, untimed). `push_registry_checks_digest` is the same push with
verify_local=False: no client-side sha256, only the registry's check of PUT ?digest=. Each
measurement runs in its own process so its peak RSS (VmHWM) is its own; runs are interleaved
and the best of --repeat is reported (other work shares the machine). Targets: push >= 90% of
the plain PUT's throughput; client memory < 100 MB.

    python benchmarks/bench_registry.py [--size-mib 1024] [--repeat 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

# VmHWM: this process's own peak RSS (ru_maxrss would include the forking parent's)
HWM = r"""
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

PLAIN_PUT = HWM + r"""
import json, sys, time, requests
url, path, digest = sys.argv[1:4]
t0 = time.perf_counter()
r = requests.post(f"{url}/v2/bench/plain/blobs/uploads/")
assert r.status_code == 202, r.text
location = requests.compat.urljoin(r.url, r.headers["Location"])
with open(path, "rb") as f:
    r = requests.put(location + ("&" if "?" in location else "?") + "digest=" + digest, data=f,
                     headers={"Content-Type": "application/octet-stream"})
assert r.status_code == 201, r.text
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "rss_mib": hwm()}))
"""

PUSH = HWM + r"""
import json, sys, time
from modelpack.registry import push
from modelpack.store import Store
ref, dest, home, verify = sys.argv[1:5]
t0 = time.perf_counter()
result = push(ref, dest, store=Store(home), insecure=True, verify_local=verify == "1")
print(json.dumps({"seconds": time.perf_counter() - t0, "bytes_sent": result.bytes_sent,
                  "rss_mib": hwm()}))
"""

PULL = HWM + r"""
import json, sys, time
from modelpack.registry import pull
from modelpack.store import Store
ref, home = sys.argv[1:3]
t0 = time.perf_counter()
result = pull(ref, store=Store(home), insecure=True)
print(json.dumps({"seconds": time.perf_counter() - t0, "bytes_received": result.bytes_received,
                  "rss_mib": hwm()}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_model_blob(store, size: int) -> tuple[str, int]:
    chunk = 8 << 20
    with store.blob_writer() as w:
        left = size
        while left:
            n = min(chunk, left)
            w.write(os.urandom(n))
            left -= n
    return w.digest, w.size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from modelpack import bundle as B
    from modelpack.store import Store
    from registry_server import running_registry

    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        store = Store(home)
        model = make_model_blob(store, size)
        template = store.write_blob(b"{{ .Prompt }}")
        config = store.write_blob(B.OllamaConfig(model_family="llama").encode())
        with running_registry(tmp / "registry") as registry:
            ref = f"{registry.host}/bench/model:latest"
            store.put_manifest(ref, B.ollama_manifest(B.Descriptor(B.OLLAMA_CONFIG, *config), [
                B.Descriptor(B.OLLAMA_MODEL, *model), B.Descriptor(B.OLLAMA_TEMPLATE, *template)]))
            bundle_bytes = size + template[1] + config[1]
            blob_path = str(store.blob_path(model[0]))
            plain, pushes, pushes_nohash, pulls = [], [], [], []
            # every upload starts from a registry that holds no blob data, so each writes it all
            blobs_dir = registry.storage / "docker/registry/v2/blobs"
            for i in range(args.repeat):  # interleaved, so a busy neighbour hurts all alike
                shutil.rmtree(blobs_dir, ignore_errors=True)
                plain.append(run_child(PLAIN_PUT, registry.url, blob_path, model[0]))
                for verify, runs in (("1", pushes), ("0", pushes_nohash)):
                    shutil.rmtree(blobs_dir, ignore_errors=True)
                    (home / "uploads" / "sources.json").unlink(missing_ok=True)  # no cross-repo mount
                    runs.append(run_child(PUSH, ref, f"{registry.host}/bench/push{verify}x{i}:latest", str(home),
                                          verify))
                    assert runs[-1]["bytes_sent"] == bundle_bytes
                    pulls.append(run_child(PULL, f"{registry.host}/bench/push{verify}x{i}:latest", str(tmp / "pull")))
                    assert pulls[-1]["bytes_received"] == bundle_bytes
                    shutil.rmtree(tmp / "pull")

    def best(runs, nbytes):
        fastest = min(r["seconds"] for r in runs)
        return {"seconds": round(fastest, 3), "mib_per_s": round(nbytes / fastest / (1 << 20), 1),
                "peak_rss_mib": round(max(r["rss_mib"] for r in runs), 1),
                "all_seconds": [round(r["seconds"], 3) for r in runs]}

    report = {
        "bundle_mib": round(bundle_bytes / (1 << 20), 1),
        "cpus": os.cpu_count(),
        "plain_put": best(plain, size),
        "push": best(pushes, bundle_bytes),
        "push_registry_checks_digest": best(pushes_nohash, bundle_bytes),
        "pull": best(pulls, bundle_bytes),
    }
    for name in ("push", "push_registry_checks_digest"):
        report[f"{name}_vs_plain_put"] = round(report[name]["mib_per_s"] / report["plain_put"]["mib_per_s"], 3)
    report["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name in ("plain_put", "push", "push_registry_checks_digest", "pull"):
            r = report[name]
            print(f"{name:28s} {r['mib_per_s']:8.1f} MiB/s  best {r['seconds']:.2f}s of {r['all_seconds']}  "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB")
        print(f"push / plain PUT = {report['push_vs_plain_put']:.1%}, without the client-side hash "
              f"{report['push_registry_checks_digest_vs_plain_put']:.1%} (target >= 90%); bundle "
              f"{report['bundle_mib']} MiB; {report['cpus']} CPUs, load average {report['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
