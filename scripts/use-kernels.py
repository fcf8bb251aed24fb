#!/usr/bin/env python3
"""Loads kernels from a Triton cache directory the way Triton 3.x does on a cache hit, without compiling anything:
for each kernel, `FileCacheManager(key)` (which `makedirs` the key's directory, as every lookup does), `get_group`
(reads `__grp__<name>.json` and checks that every child path exists), then reads every file of the group, as
`compile()` and `CompiledKernel` do. This is the hit path of a process that uses cached kernels it knows by key.

Usage: TRITON_CACHE_DIR=DIR use-kernels.py KERNELS_FILE
KERNELS_FILE has one "KEY NAME" per line (NAME: the kernel's name, `add_kernel` for `__grp__add_kernel.json`).
Prints one JSON line: {"seconds", "kernels", "hits", "bytes"}; seconds excludes interpreter start and imports.
"""
import json
import sys
import time
from pathlib import Path

from triton.runtime.cache import FileCacheManager

kernels = [line.split() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
start = time.monotonic()
hits = 0
total = 0
for key, name in kernels:
    group = FileCacheManager(key).get_group(f"{name}.json")
    if group is None:
        continue
    hits += 1
    for path in group.values():
        total += len(Path(path).read_bytes())
print(json.dumps({"seconds": round(time.monotonic() - start, 4), "kernels": len(kernels), "hits": hits,
                  "bytes": total}), flush=True)
