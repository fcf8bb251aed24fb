"""The fleet row of scripts/bench (issue 16): compile once per fleet, measured on a simulated fleet of two real
mounts with their own cache directories and one local registry.

  F1  time from node A's `mcvfs publish` returning to node B's first hit on that kernel (B mounted with
      --refresh-interval before the publish, no remount), against the refresh interval; target <= interval + 1 s.
      Each run publishes at a random point of B's refresh period: the median and the worst run are reported.
      A "hit" is what Triton's hit path looks at first, the kernel's group file, seen from a fresh process polling
      every 20 ms; a real Triton run on B then confirms every kernel hits.
  F1  compiles per unique kernel across the fleet: A's misses and B's, over the kernels; target 1.0.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILE = ROOT / "Tests" / "e2e" / "support" / "compile_kernels.py"
FIXTURE = ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
TARGET = "cuda:90:32"


def compile_kernels(cache_dir: Path, blocks: list[int], home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env.update({"HOME": str(home), "TRITON_HOME": str(home), "TRITON_CACHE_DIR": str(cache_dir)})
    out = subprocess.run([sys.executable, str(COMPILE), "--target", TARGET, "--blocks", ",".join(map(str, blocks))],
                         env=env, capture_output=True, text=True, check=True, cwd=str(home)).stdout
    return json.loads(out.strip().splitlines()[-1])


def first_group_file(mnt: Path, keys: set[str], guard: float) -> float:
    """Polls, from a fresh process (no dentry of this one's), until every key's group file shows; returns when."""
    probe = f"""
import glob, os, sys, time
keys = {sorted(keys)!r}
deadline = time.monotonic() + {guard}
while time.monotonic() < deadline:
    if all(glob.glob(os.path.join({str(mnt)!r}, k, "__grp__*.json")) for k in keys):
        print(time.time()); sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=guard + 30)
    if out.returncode != 0:
        raise SystemExit(f"bench: B never showed the published kernels within {guard} s")
    return float(out.stdout.strip())


def bench_fleet(mcvfs: str, tmp: Path, registry_host: str, row, mount, repeat: int, refresh: float = 2,
                kernels: int = 2) -> None:
    repo = f"{registry_host}/bench/fleet"
    subprocess.run([mcvfs, "push", "--plain-http", str(FIXTURE), f"{repo}:cuda-sm90"], check=True, capture_output=True)
    latencies, compiles, unique = [], 0, 0
    block = 4
    rng = random.Random(16)
    with mount(repo, tmp / "f1-a", tmp / "f1-a-cache", writable=True), \
            mount(repo, tmp / "f1-b", tmp / "f1-b-cache", "--refresh-interval", str(refresh), writable=True):
        for i in range(repeat):
            blocks = [block << n for n in range(kernels)]
            block = blocks[-1] << 1
            upper = next((tmp / "f1-a-cache" / "upper").glob("*/0"), None)
            before = {p.name for p in upper.iterdir()} if upper else set()
            summary = compile_kernels(tmp / "f1-a", blocks, tmp / f"f1-home-a-{i}")
            compiles += summary["kernels"] - summary["hits"]
            unique += summary["kernels"]
            upper = next((tmp / "f1-a-cache" / "upper").glob("*/0"))
            keys = {p.name for p in upper.iterdir() if p.is_dir() and not p.name.startswith(".")} - before
            # Publish at a random point of B's refresh period, so the runs do not fall into step with it.
            time.sleep(rng.uniform(0, refresh))
            subprocess.run([mcvfs, "publish", "--plain-http", "--cache-dir", str(tmp / "f1-a-cache"),
                            str(tmp / "f1-a"), repo], check=True, capture_output=True)
            published = time.time()
            seen = first_group_file(tmp / "f1-b", keys, guard=refresh * 10 + 30)
            latencies.append(seen - published)
            on_b = compile_kernels(tmp / "f1-b", blocks, tmp / f"f1-home-b-{i}")
            if on_b["hits"] != on_b["kernels"]:
                raise SystemExit(f"bench: B did not hit what A published: {on_b}")
            compiles += on_b["kernels"] - on_b["hits"]
    latency, worst = statistics.median(latencies), max(latencies)
    row("F1", f"publish on A to first hit on B, --refresh-interval {refresh:g} s, {kernels} kernels (s; worst of "
        f"{len(latencies)}: {worst:.2f})", f"{latency:.2f}", f"{refresh:g} refresh interval",
        f"{latency / refresh:.2f}", f"<= {refresh + 1:g} s")
    row("F1", f"compiles per unique kernel across the fleet ({unique} kernels, 2 nodes)",
        f"{compiles / unique:.2f}", "", "", "1.0")
