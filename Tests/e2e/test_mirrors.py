"""Fleet distribution through a registry-API mirror (issue 17): nodes mount the origin's reference with
`--mirror HOST` naming a pull-through cache (CNCF distribution in proxy mode; Spegel and Dragonfly expose the
same distribution API). Checked from the three registries' own request logs: the eStargz layer is read by
ranges through the mirror, file by file, each blob leaves the origin once for the whole fleet, and a node
still mounts when the origin is down."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.mirrors import PullThroughCache
from support.mounts import ON_DEMAND, MountPool, run_triton
from support.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
KEY = "3PTOANQEQTSA6SMXSRQSEKSNTIQYFJIP37QGU5JTYHLWOCHFGMCQ"


@pytest.fixture
def fleet(tmp_path, mcvfs):
    origin = Registry(tmp_path / "origin").start()
    mirror = PullThroughCache(tmp_path / "mirror", origin).start()
    pool = MountPool(mcvfs)
    try:
        out = mcvfs.run("push", "--plain-http", str(FIXTURE), f"{origin.host}/org/cache:cuda-sm90")  # eStargz
        assert out.rc == 0, out
        yield origin, mirror, pool
    finally:
        pool.close()
        mirror.stop()
        origin.stop()


def layer_of(mcvfs, origin: Registry) -> dict:
    out = mcvfs.run("inspect", "--plain-http", "--json", f"{origin.host}/org/cache:cuda-sm90").json()
    (layer,) = out["layers"]
    return layer


def blob_gets(registry: Registry, since: int = 0) -> list[str]:
    return [r.uri for r in registry.requests_since(since) if r.method == "GET" and "/blobs/" in r.uri]


def test_nodes_read_estargz_by_ranges_through_a_pull_through_cache(fleet, tmp_path, mcvfs):
    origin, mirror, pool = fleet
    layer = layer_of(mcvfs, origin)
    assert "containerd.io/snapshot/stargz/toc.digest" in layer["annotations"], layer
    ref = f"{origin.host}/org/cache"

    # Node 1, cold: the first kernel is served from a few range reads through the mirror.
    one = pool.mount(ref, tmp_path / "node1", tmp_path / "cache1", "--gpu", "cuda:90", "--mirror", mirror.host,
                     *ON_DEMAND)
    group = next(p.name for p in (FIXTURE / KEY).iterdir() if p.name.startswith("__grp__"))
    assert json.loads((one.path / KEY / group).read_bytes())["child_paths"]
    fetch = one.status()["fetch"]
    assert fetch["rangeRequests"] >= 3, fetch  # footer, TOC, the directory's files
    assert 0 < fetch["bytesFetched"] < layer["size"], (fetch, layer["size"])
    assert one.status()["service"]["mirrorFallbacks"] == 0
    lines, summary = run_triton(one.path, "cuda:90:32", kernels="add,softmax,matmul", matmul_configs=4,
                                home=tmp_path / "home1")
    assert summary["hits"] == summary["kernels"] == 6, summary
    layer_blob = f"/v2/org/cache/blobs/{layer['digest']}"
    assert layer_blob in blob_gets(mirror), "node 1 did not read the layer through the mirror"
    from_origin = blob_gets(origin).count(layer_blob)
    assert from_origin >= 1

    # Node 2, cold cache of its own: the mirror has the layer now, the origin sees no request for it.
    mark = origin.mark()
    two = pool.mount(ref, tmp_path / "node2", tmp_path / "cache2", "--gpu", "cuda:90", "--mirror", mirror.host,
                     *ON_DEMAND)
    lines, summary = run_triton(two.path, "cuda:90:32", kernels="add,softmax,matmul", matmul_configs=4,
                                home=tmp_path / "home2")
    assert summary["hits"] == 6, summary
    assert two.status()["fetch"]["rangeRequests"] >= 3
    assert layer_blob not in blob_gets(origin, mark), "the origin served the layer again"

    # Node 3, with the origin down: tags, manifests, configs and ranges all come from the mirror.
    origin.stop()
    three = pool.mount(ref, tmp_path / "node3", tmp_path / "cache3", "--gpu", "cuda:90", "--mirror", mirror.host,
                       "--timeout", "3")
    lines, summary = run_triton(three.path, "cuda:90:32", kernels="add,softmax,matmul", matmul_configs=4,
                                home=tmp_path / "home3")
    assert summary["hits"] == 6, summary
    assert three.status()["service"]["mirrorFallbacks"] == 0
