#!/usr/bin/env python3
"""Benchmark: real Triton warm runs through an mcvfs mount against the baselines, side by side in one run.

Measures, for N kernels (default 10: add, softmax, 8 matmul configs) compiled for cuda:90:32:
  compile   - compile from scratch into an empty cache dir
  local     - warm run from a plain local copy of the cache (group files relocated, the best case)
  mount-cold- warm run through a fresh mcvfs mount with an EMPTY blob cache (includes fetching the layer)
  mount-warm- the same mount again (layer local, kernel page cache warm)
  remount   - a new read-only mount over the now-warm blob cache (what a restarted pod sees)
  writable  - the same with the default writable overlay
Each figure is the median of --repeat fresh Python processes, timed inside the process (Triton's own
compile() calls; interpreter start and `import triton` are the same for all and excluded). Ratios are to
`local`. Prints a Markdown table (paste into README.md).

Usage: .venv/bin/python scripts/bench-mount.py [--repeat 5] [--matmul-configs 8]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
from support.images import build_mcv_layout, skopeo_push  # noqa: E402
from support.registry import Registry  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--repeat", type=int, default=5)
ap.add_argument("--matmul-configs", type=int, default=8)
ap.add_argument("--mcvfs", default=os.environ.get("MCVFS_BIN") or str(ROOT / ".build" / "release" / "mcvfs"))
a = ap.parse_args()

MAKE = ROOT / "scripts" / "make-triton-cache.py"
TARGET = "cuda:90:32"


def triton_run(cache_dir: Path) -> dict:
    """One fresh process compiling the kernel set with TRITON_CACHE_DIR=cache_dir; returns its summary."""
    env = dict(os.environ, TRITON_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, str(MAKE), "--target", TARGET, "--matmul-configs", str(a.matmul_configs)],
                         env=env, capture_output=True, text=True, check=True, cwd="/").stdout
    return json.loads(out.strip().splitlines()[-1])


def timed(cache_dir: Path, repeat: int, expect_hits: bool = True) -> float:
    times = []
    for _ in range(repeat):
        summary = triton_run(cache_dir)
        if expect_hits and summary["hits"] != summary["kernels"]:
            raise SystemExit(f"bench: expected all hits from {cache_dir}, got {summary}")
        times.append(summary["total_seconds"])
    return statistics.median(times)


def relocate_copy(src: Path, dst: Path) -> None:
    """A plain local copy with group files rewritten the way a relocating extraction would."""
    shutil.copytree(src, dst)
    for group in dst.glob("*/__grp__*.json"):
        doc = json.loads(group.read_text())
        doc["child_paths"] = {n: str(group.parent / n) for n in doc["child_paths"]}
        group.write_text(json.dumps(doc))


def mcvfs(*args: str) -> None:
    subprocess.run([a.mcvfs, *args], check=True, capture_output=True, text=True)


with tempfile.TemporaryDirectory(prefix="mcvfs-bench-") as tmp:
    tmp = Path(tmp)
    build = tmp / "opt-build" / "cache"  # a foreign path, as a CI build machine's
    compile_times = []
    for i in range(a.repeat):
        shutil.rmtree(build, ignore_errors=True)
        summary = triton_run(build)
        assert summary["hits"] == 0, summary
        compile_times.append(summary["total_seconds"])
    kernels = summary["kernels"]
    compile_s = statistics.median(compile_times)

    local = tmp / "local"
    relocate_copy(build, local)
    local_s = timed(local, a.repeat)

    with Registry(tmp / "registry") as registry:
        layout = build_mcv_layout(build, tmp / "image", tag="bench")
        skopeo_push(layout, registry.host, "bench/cache", "cuda-sm90")
        ref = f"{registry.host}/bench/cache"
        mnt = tmp / "mnt"
        mnt.mkdir()
        cache = tmp / "blob-cache"
        cold = []
        for _ in range(a.repeat):
            shutil.rmtree(cache, ignore_errors=True)
            mcvfs("mount", "--plain-http", "--read-only", "--gpu", TARGET, "--cache-dir", str(cache), ref, str(mnt))
            try:
                cold.append(timed(mnt, 1))
            finally:
                mcvfs("unmount", str(mnt))
        mount_cold_s = statistics.median(cold)
        mcvfs("mount", "--plain-http", "--read-only", "--gpu", TARGET, "--cache-dir", str(cache), ref, str(mnt))
        try:
            timed(mnt, 1)
            mount_warm_s = timed(mnt, a.repeat)
        finally:
            mcvfs("unmount", str(mnt))
        remounts = []
        for _ in range(a.repeat):
            mcvfs("mount", "--plain-http", "--read-only", "--gpu", TARGET, "--cache-dir", str(cache), ref, str(mnt))
            try:
                remounts.append(timed(mnt, 1))
            finally:
                mcvfs("unmount", str(mnt))
        remount_s = statistics.median(remounts)
        # The default mount is the writable overlay: names resolve per caller against the upper on every lookup.
        writable = []
        for _ in range(a.repeat):
            mcvfs("mount", "--plain-http", "--gpu", TARGET, "--cache-dir", str(cache), ref, str(mnt))
            try:
                writable.append(timed(mnt, 1))
            finally:
                mcvfs("unmount", str(mnt))
        writable_s = statistics.median(writable)

rows = [
    ("compile from scratch (no cache)", compile_s),
    ("warm, plain local directory (baseline)", local_s),
    ("warm via mount, cold blob cache (fetch + verify + index)", mount_cold_s),
    ("warm via mount, warm blob cache, fresh mount", remount_s),
    ("warm via mount, same mount again", mount_warm_s),
    ("warm via writable mount (the default overlay), fresh mount", writable_s),
]
print(f"Triton {summary.get('triton')}, {kernels} kernels for {TARGET}, median of {a.repeat} fresh processes\n")
print("| run | seconds | ratio to local |")
print("|---|---:|---:|")
for name, seconds in rows:
    print(f"| {name} | {seconds:.3f} | {seconds / local_s:.2f} |")
