"""scripts/bench, rows L1-L5: mcvfs against MCV's path with the registry a round trip away (a latency proxy on
loopback, Tests/e2e/support/latency_proxy.py), for three workload shapes, a gzip first-kernel row, and real Triton
started a while after the mount (L5: what a DaemonSet's mount, made before pods start, fetched meanwhile).

Every row starts cold: an empty blob cache and a fresh mount for mcvfs; an empty OCI directory and extraction
directory for the baseline, which is MCV's path at its best: `skopeo copy` of the image, `tar x` of its layer, the
group files relocated (so Triton hits), then the same workload run from that local directory. "local warm dir" is
that directory again with everything in the page cache: the floor no path can go below.

A workload is real Triton for the 6-kernel fixture (compile() of each kernel, every one a cache hit) and Triton's
own cache hit path (scripts/use-kernels.py) for the large image, whose kernels are fixture copies under distinct
keys and so cannot be compiled again. Timings are the mount's wall time (mcvfs) or the copy and extraction's
(baseline), plus the workload's own time (interpreter start and `import triton` excluded: the same for every row).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
from support.latency_proxy import LatencyProxy  # noqa: E402
from support.registry import require_tool  # noqa: E402

MAKE = ROOT / "scripts" / "make-triton-cache.py"
USE = ROOT / "scripts" / "use-kernels.py"
FIXTURE = ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"


@dataclass
class Harness:
    """What the main bench script lends these rows."""
    args: object
    tmp: Path
    registry_host: str
    row: Callable
    mount: Callable
    push: Callable
    median_time: Callable
    read_entry: Callable
    replicate: Callable
    fmt_bytes: Callable


@dataclass
class Workload:
    name: str
    source: Path  # the cache pushed
    kernels: list[tuple[str, str]]  # (KEY, name) the process uses
    real_triton: bool  # run compile() (the fixture) instead of the hit path alone

    def run(self, cache_dir: Path, python: str) -> float:
        """Seconds the workload spends loading its kernels from `cache_dir`; every one must hit."""
        env = dict(os.environ, TRITON_CACHE_DIR=str(cache_dir), TRITON_DEFAULT_FP_FUSION="1")
        if self.real_triton:
            argv = [python, str(MAKE), "--target", "cuda:90:32", "--matmul-configs", "4"]
        else:
            listing = cache_dir.parent / f".{cache_dir.name}-{self.name}.kernels"
            listing.write_text("".join(f"{key} {name}\n" for key, name in self.kernels))
            argv = [python, str(USE), str(listing)]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd="/").stdout
        result = json.loads(out.strip().splitlines()[-1])
        if result["hits"] != len(self.kernels):
            raise SystemExit(f"bench: {self.name}: {result['hits']} of {len(self.kernels)} hits from {cache_dir}")
        return result.get("total_seconds", result.get("seconds"))


def kernels_of(cache: Path) -> list[tuple[str, str]]:
    """(KEY, kernel name) of every kernel directory (those with a group file)."""
    found = []
    for entry in sorted(p for p in cache.iterdir() if p.is_dir()):
        groups = sorted(entry.glob("__grp__*.json"))
        if groups:
            found.append((entry.name, groups[0].name[len("__grp__"):-len(".json")]))
    return found


def relocate(cache: Path) -> None:
    """Rewrites every group file's child paths to where the children now are: what MCV's extraction must do
    before Triton can hit (DOMAIN.md §1), done here as cheaply as it can be."""
    for group in cache.glob("*/__grp__*.json"):
        doc = json.loads(group.read_text())
        doc["child_paths"] = {n: str(group.parent / n) for n in doc["child_paths"]}
        group.write_text(json.dumps(doc))


def pull_extract(h: Harness, ref: str, work: Path) -> tuple[Path, float]:
    """MCV's path: skopeo copy into an OCI layout, tar x of the layer, group files relocated. Returns the cache
    directory and the seconds it took."""
    skopeo = require_tool("skopeo")
    oci, out = work / "oci", work / "out"
    shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.monotonic()
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:v1"], check=True,
                   capture_output=True)
    index = json.loads((oci / "index.json").read_text())
    manifest = json.loads((oci / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    for layer in manifest["layers"]:
        subprocess.run(["tar", "xf", oci / "blobs" / "sha256" / layer["digest"].split(":")[1], "-C", out],
                       check=True, capture_output=True)
    cache = out / "io.triton.cache"
    relocate(cache)
    return cache, time.monotonic() - start


def measure_workload(h: Harness, proxy: LatencyProxy, repo: str, workload: Workload, pid: str, target: str,
                     hot_tag: str) -> None:
    a, python = h.args, sys.executable
    base_ref = f"{proxy.host}/{repo}"
    mnt, blobs = h.tmp / f"{pid}-mnt", h.tmp / f"{pid}-cache"

    def mcvfs_cold(tag: str) -> Callable[[], float]:
        def once() -> float:
            shutil.rmtree(blobs, ignore_errors=True)
            start = time.monotonic()
            with h.mount(f"{base_ref}:{tag}", mnt, blobs, writable=True):
                mounted = time.monotonic() - start
                return mounted + workload.run(mnt, python)
        return once

    def baseline() -> float:
        cache, seconds = pull_extract(h, f"{base_ref}:gzip", h.tmp / f"{pid}-pull")
        return seconds + workload.run(cache, python)

    local, _ = pull_extract(h, f"{h.registry_host}/{repo}:gzip", h.tmp / f"{pid}-local")
    workload.run(local, python)  # the page cache now holds everything
    local_s = h.median_time(lambda: workload.run(local, python))
    base_s = h.median_time(baseline)
    rows = [("mcvfs eStargz", mcvfs_cold("estargz")), ("mcvfs gzip (one layer, as MCV pushes)", mcvfs_cold("gzip")),
            ("mcvfs eStargz with the workload's hot set", mcvfs_cold(hot_tag))]
    results = {name: h.median_time(fn) for name, fn in rows}
    label = f"{workload.name}, {len(workload.kernels)} used"
    h.row(pid, f"{label}: local warm dir (s)", f"{local_s:.3f}", "", "", "")
    h.row(pid, f"{label}: MCV's path, skopeo copy + tar x + relocation + run (s)", f"{base_s:.3f}", "", "", "")
    for name, seconds in results.items():
        h.row(pid, f"{label}: {name}, cold (s)", f"{seconds:.3f}", f"{base_s:.3f} MCV's path",
              f"{seconds / base_s:.2f}", target)
    hot = results["mcvfs eStargz with the workload's hot set"]
    h.row(pid, f"{label}: mcvfs eStargz with the hot set / local warm dir", f"{hot:.3f}", f"{local_s:.3f} local",
          f"{hot / local_s:.2f}", "<= 1.3")


def push_variants(h: Harness, cache: Path, repo: str, hot_sets: dict[str, list[str]]) -> None:
    """eStargz (the default), gzip, and one eStargz per hot set (tag -> keys), pushed straight to the registry."""
    ref = f"{h.registry_host}/{repo}"
    h.push(cache, f"{ref}:estargz")
    h.push(cache, f"{ref}:gzip", "--layer-format", "gzip")
    for tag, keys in hot_sets.items():
        listing = h.tmp / f"{repo.replace('/', '-')}-{tag}.hot"
        listing.write_text("".join(k + "\n" for k in keys))
        h.push(cache, f"{ref}:{tag}", "--hot-set", str(listing))


def first_kernel_gzip(h: Harness, proxy: LatencyProxy, repo: str, cache: Path, raw: int) -> None:
    """L4: time from a cold mount to the first kernel's bytes for a gzip image, against skopeo copy + tar x."""
    key = sorted(p.name for p in cache.iterdir() if p.is_dir())[0]
    ref = f"{proxy.host}/{repo}:gzip"
    mnt, blobs = h.tmp / "l4-mnt", h.tmp / "l4-cache"

    def mcvfs_first() -> float:
        shutil.rmtree(blobs, ignore_errors=True)
        start = time.monotonic()
        with h.mount(ref, mnt, blobs, writable=True):
            h.read_entry(mnt / key)
            return time.monotonic() - start

    def copy_extract() -> float:
        return pull_extract(h, ref, h.tmp / "l4-pull")[1]
    mine, base = h.median_time(mcvfs_first), h.median_time(copy_extract)
    h.row("L4", f"time to first kernel, gzip layer, {h.fmt_bytes(raw)} files (s)", f"{mine:.3f}",
          f"{base:.3f} skopeo copy + tar x", f"{mine / base:.3f}", "<= 0.25")


def started_after_mount(h: Harness, proxy: LatencyProxy, repo: str, workload: Workload, delay: float) -> None:
    """L5: the workload started `delay` seconds after a cold mount (default prefetch), against a local warm dir:
    with `--prefetch all` the mount fetches from the moment it is made, so the workload should find it all local."""
    python = sys.executable
    mnt, blobs = h.tmp / "l5-mnt", h.tmp / "l5-cache"

    def after_mount() -> float:
        shutil.rmtree(blobs, ignore_errors=True)
        with h.mount(f"{proxy.host}/{repo}:estargz", mnt, blobs, writable=True):
            time.sleep(delay)
            return workload.run(mnt, python)

    local, _ = pull_extract(h, f"{h.registry_host}/{repo}:gzip", h.tmp / "l5-local")
    workload.run(local, python)  # the page cache now holds everything
    local_s = h.median_time(lambda: workload.run(local, python))
    mine = h.median_time(after_mount)
    h.row("L5", f"{workload.name}: Triton started {delay:g} s after mount (s) / local warm dir", f"{mine:.3f}",
          f"{local_s:.3f} local", f"{mine / local_s:.2f}", "<= 1.05")


def bench_network(h: Harness, only: set[str]) -> None:
    a = h.args
    bandwidth = a.bandwidth_mbit * 1e6 / 8 if a.bandwidth_mbit else None
    link = f"{a.delay_ms:g} ms" + (f", {a.bandwidth_mbit:g} Mbit/s" if bandwidth else "")
    print(f"L rows: registry behind a latency proxy: {link} per request and per connection", flush=True)
    with LatencyProxy(h.registry_host, delay=a.delay_ms / 1000, bandwidth=bandwidth) as proxy:
        if only & {"L1", "L5"}:
            small = Workload("6-kernel fixture image", FIXTURE, kernels_of(FIXTURE), real_triton=True)
            push_variants(h, FIXTURE, "bench/net-small", {"hot": [k for k, _ in small.kernels]})
            if "L1" in only:
                measure_workload(h, proxy, "bench/net-small", small, "L1", "<= 1.0", "hot")
            if "L5" in only:
                started_after_mount(h, proxy, "bench/net-small", small, delay=2.0)
        if only & {"L2", "L3", "L4"}:
            per_copy = len(kernels_of(FIXTURE))
            big = h.replicate(FIXTURE, h.tmp / "net-big", max(1, round(a.net_kernels / per_copy)))
            everything = kernels_of(big)
            raw = sum(p.stat().st_size for p in big.rglob("*") if p.is_file())
            used = sorted(random.Random(14).sample(everything, min(a.net_used, len(everything))))
            hot_sets = {}
            if "L2" in only:
                hot_sets["hot-some"] = [k for k, _ in used]
            if "L3" in only:
                hot_sets["hot-all"] = [k for k, _ in everything]
            push_variants(h, big, "bench/net-big", hot_sets)
            name = f"{len(everything)}-kernel {h.fmt_bytes(raw)} image"
            if "L2" in only:
                measure_workload(h, proxy, "bench/net-big", Workload(name, big, used, False), "L2", "<= 0.3",
                                 "hot-some")
            if "L3" in only:
                measure_workload(h, proxy, "bench/net-big", Workload(name, big, everything, False), "L3", "<= 1.0",
                                 "hot-all")
            if "L4" in only:
                first_kernel_gzip(h, proxy, "bench/net-big", big, raw)
