"""Whole-layer images (issue 14): gzip, zstd and tar layers, what MCV, GKM and buildah push, are unpacked while they
download into one pack per layer and served from it once the layer's digest verifies. A corrupt or hostile layer is
still refused, and leaves nothing in the cache: no pack, no blob, no temp file."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from support.images import OCI_LAYER_GZIP, RegistryAPI, mcv_labels, stage_mcv_tree, tar_of_tree
from support.latency_proxy import LatencyProxy
from support.lazy_fetch import FIXTURE, kernel_dirs, registry  # noqa: F401
from support.mcvfs import all_files, blob_files, pack_files
from support.mounts import access_errno
from support.net import wait_until

KEYS = kernel_dirs(FIXTURE)
GUARD = 120


def assert_nothing_kept(cache: Path, layer: str) -> None:
    assert layer not in blob_files(cache) and layer not in pack_files(cache)
    assert not (cache / "index" / "sha256" / (layer.split(":")[1] + ".json")).exists()
    leftovers = [p for p in all_files(cache / "ingest") if p.stat().st_size] if (cache / "ingest").is_dir() else []
    assert leftovers == [], f"a refused layer left bytes behind: {leftovers}"


@pytest.mark.parametrize("fmt", ["gzip", "zstd", "tar"])
def test_a_whole_layer_is_served_from_its_pack_and_again_offline(mcvfs, registry, mounts, tmp_path, fmt):
    r = mcvfs.run("push", "--plain-http", "--layer-format", fmt, str(FIXTURE), f"{registry.host}/wl/app:{fmt}")
    assert r.rc == 0, r
    layer = json.loads(RegistryAPI(registry.host).get_manifest("wl/app", fmt)[0])["layers"][0]
    cache = tmp_path / "cache"
    with LatencyProxy(registry.host) as proxy:
        ref = f"{proxy.host}/wl/app:{fmt}"
        mnt = mounts.mount(ref, tmp_path / "mnt", cache, "--gpu", "cuda:90")
        for key in KEYS:
            for f in sorted((FIXTURE / key).iterdir()):
                if not f.name.startswith("__grp__"):
                    assert (mnt.path / key / f.name).read_bytes() == f.read_bytes(), f"{key}/{f.name}"
        # One download of the blob, whole.
        assert [e.range for e in proxy.blob_requests(layer["digest"])] == [None]
        # Committed in the background: the blob, one pack for every file, the index; no file blob each.
        wait_until(lambda: (cache / "index" / "sha256" / (layer["digest"].split(":")[1] + ".json")).exists(),
                   timeout=GUARD, what="the layer's commit")
        assert layer["digest"] in blob_files(cache) and layer["digest"] in pack_files(cache)
        assert len(blob_files(cache)) <= 2, sorted(blob_files(cache))  # the layer and its config
        mnt.unmount()
    # The registry gone: a remount serves the pack as it is.
    registry.stop()
    again = mounts.mount(ref, tmp_path / "mnt", cache, "--gpu", "cuda:90", "--offline")
    for key in KEYS:
        assert (again.path / key / next(f.name for f in (FIXTURE / key).iterdir() if f.suffix == ".ptx"
                                         or f.suffix == ".cubin")).read_bytes()


def test_a_corrupt_layer_whose_digest_matches_is_refused_and_nothing_kept(mcvfs, registry, mounts, tmp_path):
    """The publisher pushed a broken gzip stream (cut short, its digest taken over the broken bytes): the digest
    verifies, the decompression does not."""
    tree = stage_mcv_tree(FIXTURE, tmp_path / "tree")
    whole = gzip.compress(tar_of_tree(tree))
    broken = whole[: len(whole) * 2 // 3]
    api = RegistryAPI(registry.host)
    pushed = api.push_image("wl/broken", "v1", [(broken, OCI_LAYER_GZIP)], labels=mcv_labels(FIXTURE),
                            uncompressed_layers=[tar_of_tree(tree)])
    layer = pushed["manifest"]["layers"][0]["digest"]
    cache = tmp_path / "cache"
    mnt = mounts.mount(f"{registry.host}/wl/broken:v1", tmp_path / "mnt", cache, "--gpu", "cuda:90",
                       "--retry-delay", "1")
    # The only image that could hold the name failed: absent (Triton compiles), never a torn or unverified file.
    assert access_errno(mnt.path / KEYS[0], op="stat") == "ENOENT"
    status = mnt.status()
    assert status["fetch"]["verificationFailures"] >= 1
    assert [u["state"] for u in status["used"]] == ["failed"], status["used"]
    assert_nothing_kept(cache, layer)


def test_a_hostile_whole_layer_is_refused_and_nothing_kept(mcvfs, registry, mounts, tmp_path):
    """A valid gzip layer holding a path that climbs out of the layer, beside honest kernels."""
    tree = stage_mcv_tree(FIXTURE, tmp_path / "tree")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        t.add(tree / "io.triton.cache", arcname="io.triton.cache")
        info = tarfile.TarInfo("io.triton.cache/../../escape")
        data = b"written outside?"
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    api = RegistryAPI(registry.host)
    pushed = api.push_image("wl/hostile", "v1", [(gzip.compress(raw), OCI_LAYER_GZIP)], labels=mcv_labels(FIXTURE),
                            uncompressed_layers=[raw])
    layer = pushed["manifest"]["layers"][0]["digest"]
    cache = tmp_path / "cache"
    mnt = mounts.mount(f"{registry.host}/wl/hostile:v1", tmp_path / "mnt", cache, "--gpu", "cuda:90")
    assert access_errno(mnt.path / KEYS[0], op="stat") == "ENOENT"
    status = mnt.status()
    assert "escape" in json.dumps(status) and [u["state"] for u in status["used"]] == ["failed"], status["used"]
    assert_nothing_kept(cache, layer)
    assert not any(p.name == "escape" for p in cache.rglob("*")) and not (tmp_path / "escape").exists()
