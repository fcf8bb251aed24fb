#!/usr/bin/env python3
"""Packages a Triton cache directory as a Model Cache Vault-layout image and pushes it, as third parties do:
umoci builds the OCI layout (one layer: io.triton.cache/ + io.triton.manifest/manifest.json, MCV's labels),
skopeo pushes it.

Usage: .venv/bin/python scripts/push-cache-image.py CACHE_DIR HOST/REPO:TAG [--creds USER:PASS] [--format v2s2]
(run scripts/setup first; the registry is reached over plain HTTP, as a local test registry is).
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "e2e"))
from support.images import build_mcv_layout, skopeo_push  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("cache_dir", type=Path)
ap.add_argument("destination", help="HOST/REPO:TAG")
ap.add_argument("--creds")
ap.add_argument("--format", choices=["oci", "v2s2"])
a = ap.parse_args()

host, _, rest = a.destination.partition("/")
repo, _, tag = rest.rpartition(":")
if not host or not repo or not tag:
    sys.exit(f"push-cache-image: destination must be HOST/REPO:TAG, got {a.destination!r}")
with tempfile.TemporaryDirectory(prefix="mcv-image-") as tmp:
    layout = build_mcv_layout(a.cache_dir, Path(tmp), tag=tag)
    digest = skopeo_push(layout, host, repo, tag, creds=a.creds, fmt=a.format)
print(f"{host}/{repo}:{tag} {digest}")
