"""Hot sets (issue 14): `push --hot-set` puts a workload's kernels first in the eStargz layer, before the spec's
`.prefetch.landmark`; a mount fetches that region in one request at its first lookup, records which kernels its
readers opened, and `export --hot-set` hands the record to the next push. Requests are counted and their byte ranges
read from the latency proxy's log."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from support.images import RegistryAPI
from support.latency_proxy import LatencyProxy
from support.lazy_fetch import FIXTURE, kernel_dirs, read_kernel, registry  # noqa: F401
from support.mcvfs import Mcvfs
from support.registry import Registry
from test_estargz import read_toc, replicate


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A cache too large to be fetched whole (a prefetching mount fetches layers under 4 MiB in one request)."""
    return replicate(FIXTURE, tmp_path_factory.mktemp("hot") / "cache", copies=30)


def push(mcvfs: Mcvfs, cache: Path, ref: str, *args: str) -> None:
    r = mcvfs.run("push", "--plain-http", *args, str(cache), ref, timeout=600)
    assert r.rc == 0, r


def layer_blob(registry: Registry, repo: str, tag: str) -> tuple[dict, bytes]:
    api = RegistryAPI(registry.host)
    layer = json.loads(api.get_manifest(repo, tag)[0])["layers"][0]
    return layer, api.get_blob(repo, layer["digest"])


def test_a_hot_set_push_puts_the_entries_first_and_a_mount_fetches_them_in_one_request(
        mcvfs, registry, mounts, cache, tmp_path):
    keys = kernel_dirs(cache)
    hot = [keys[4], keys[1]]
    (tmp_path / "hot").write_text("# the workload's kernels\n" + "".join(k + "\n" for k in hot))
    push(mcvfs, cache, f"{registry.host}/hs/app:v1", "--hot-set", str(tmp_path / "hot"))
    layer, blob = layer_blob(registry, "hs/app", "v1")

    # The tar order: the hot kernels (parents first, in the set's order), the landmark, then the rest.
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(blob))]
    landmark = names.index(".prefetch.landmark")
    head = [n for n in names[:landmark] if n.count("/") >= 2]
    assert {n.split("/")[1] for n in head} == set(hot)
    assert head[0].split("/")[1] == hot[0] and head[-1].split("/")[1] == hot[1]
    assert not any(n.split("/")[1] in hot for n in names[landmark:] if n.count("/") >= 1 and
                   n.startswith("io.triton.cache/"))
    # The TOC names the landmark as the spec has it: a regular file of one byte.
    _, toc = read_toc(blob)
    entry = next(e for e in json.loads(toc)["entries"] if e["name"] == ".prefetch.landmark")
    assert entry["type"] == "reg" and entry["size"] == 1

    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/hs/app:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                           "--prefetch", "hot")
        for key in hot:
            read_kernel(mnt.path / key)
        ranges = sorted(e.range for e in proxy.blob_requests(layer["digest"]))
        # The footer, the TOC, and one request for the whole hot region (from the layer's start to the landmark).
        assert len(ranges) == 3, ranges
        assert ranges[0][0] < 1024 and ranges[0][1] + 1 == entry["offset"], (ranges, entry["offset"])
        # The other kernels are not fetched before they are read.
        read_kernel(mnt.path / keys[0])
        assert len(proxy.blob_requests(layer["digest"])) == 4


def test_a_mount_records_its_hot_set_and_the_next_push_bakes_it_in(mcvfs, registry, mounts, cache, tmp_path):
    KEYS = kernel_dirs(cache)
    push(mcvfs, cache, f"{registry.host}/hs/app:v1")
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/hs/app:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                           "--prefetch", "none")
        used = [KEYS[3], KEYS[0], KEYS[5]]
        for key in used:
            read_kernel(mnt.path / key)
        read_kernel(mnt.path / KEYS[0])  # opened again: recorded once, at its first place
        (mnt.path / KEYS[2]).stat()  # looked up, nothing opened: not part of the workload's set
        control = mnt.path / ".mcvfs"
        assert (control / "hot-set").read_text().split() == used
        assert json.loads((control / "hot-sets.json").read_text()) == {"v1": used}

        r = mcvfs.run("export", "--hot-set", str(tmp_path / "recorded"), str(mnt.path))
        assert r.rc == 0, r
        assert (tmp_path / "recorded").read_text().split() == used
        r = mcvfs.run("export", "--hot-set", str(tmp_path / "one"), "--image", "v1", str(mnt.path))
        assert r.rc == 0 and (tmp_path / "one").read_text().split() == used, r
        r = mcvfs.run("export", "--hot-set", str(tmp_path / "none"), "--image", "v9", str(mnt.path))
        assert r.rc == 1 and "v9" in r.stderr, r

        # The next push carries it, and the next node's first kernels cost one request for all three.
        push(mcvfs, cache, f"{registry.host}/hs/app:v2", "--hot-set", str(tmp_path / "recorded"))
        layer, _ = layer_blob(registry, "hs/app", "v2")
        proxy.reset()
        nxt = mounts.mount(f"{proxy.host}/hs/app:v2", tmp_path / "mnt2", tmp_path / "cache2", "--gpu", "cuda:90",
                           "--prefetch", "hot")
        for key in used:
            read_kernel(nxt.path / key)
        assert len(proxy.blob_requests(layer["digest"])) == 3, [e.range for e in proxy.blob_requests(layer["digest"])]
