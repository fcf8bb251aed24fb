#!/usr/bin/env python3
"""Compiles real Triton vector-add kernels, one per BLOCK size (each its own cache key), on a machine with no GPU,
into $TRITON_CACHE_DIR, and reports Triton's own cache-hit flag per kernel: the fleet tests need as many distinct
kernels as they like, each cheap to compile.

Usage: compile_kernels.py --target cuda:90:32 --blocks 32,64,128
Prints one JSON line per kernel ({"block", "hash", "cache_hit"}) and a summary line ({"kernels", "hits"}).
"""
import argparse
import json
import os

ap = argparse.ArgumentParser()
ap.add_argument("--target", default="cuda:90:32")
ap.add_argument("--blocks", required=True, help="comma-separated BLOCK sizes (powers of two)")
args = ap.parse_args()
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

hits = []
knobs.compilation.listener = lambda **kw: hits.append(kw.get("cache_hit"))


@triton.jit
def fleet_add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


backend, arch, warp = args.target.split(":")
target = GPUTarget(backend, int(arch) if arch.isdigit() else arch, int(warp))
signature = {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
for block in [int(b) for b in args.blocks.split(",")]:
    kernel = triton.compile(
        triton.compiler.ASTSource(fn=fleet_add, signature=signature, constexprs={"BLOCK": block}), target=target)
    print(json.dumps({"block": block, "hash": kernel.hash, "cache_hit": hits[-1]}), flush=True)
print(json.dumps({"kernels": len(hits), "hits": sum(1 for h in hits if h)}), flush=True)
