"""Background prefetch of eStargz layers (issue 14): after the first read of a layer, the rest of it arrives in large
ranges below on-demand reads; nothing is fetched twice; the cache bound holds.

The registry sits behind the latency proxy (20 ms per request, and a bandwidth cap where a test needs a prefetch to
take a while), whose log gives each request's byte range and when it arrived and finished. Waits are hang guards."""
from __future__ import annotations

import time
from pathlib import Path

from support.latency_proxy import LatencyProxy
from support.lazy_fetch import FIXTURE, kernel_dirs, layer_of, read_kernel, registry  # noqa: F401
from support.mcvfs import Mcvfs, pack_files
from support.net import wait_until
from support.registry import Registry
from test_estargz import replicate

GUARD = 120


def push(mcvfs: Mcvfs, cache: Path, ref: str, *args: str) -> None:
    r = mcvfs.run("push", "--plain-http", *args, str(cache), ref, timeout=600)
    assert r.rc == 0, r


def assert_disjoint(ranges: list[tuple[int, int]]) -> None:
    """No byte of the blob in two requests."""
    ordered = sorted(ranges)
    for (a0, a1), (b0, b1) in zip(ordered, ordered[1:]):
        assert a1 < b0, f"bytes {b0}..{min(a1, b1)} were fetched twice: {ordered}"


def test_background_prefetch_completes_the_layer_and_a_later_read_makes_no_request(
        mcvfs, registry, mounts, tmp_path):
    cache = replicate(FIXTURE, tmp_path / "src", copies=30)  # past the size a prefetching mount fetches whole
    push(mcvfs, cache, f"{registry.host}/pf/layer:v1")
    layer = layer_of(registry, "pf/layer", "v1")
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/pf/layer:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
        keys = kernel_dirs(cache)
        read_kernel(mnt.path / keys[0])
        # The rest of the layer lands in its pack, committed with the index that names it.
        wait_until(lambda: layer["digest"] in pack_files(tmp_path / "cache"), timeout=GUARD, what="the prefetch")
        fetched = proxy.blob_requests(layer["digest"])
        assert_disjoint([e.range for e in fetched])
        assert sum(e.body_bytes for e in fetched) <= layer["size"]
        proxy.reset()
        for key in keys:
            read_kernel(mnt.path / key)
        assert proxy.log("blobs") == [], "a read after the prefetch went to the registry"
        # And a remount over this cache needs no byte of the layer either.
        mnt.unmount()
        again = mounts.mount(f"{proxy.host}/pf/layer:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
        for key in keys:
            read_kernel(again.path / key)
        assert proxy.blob_requests(layer["digest"]) == []


def test_an_on_demand_read_is_never_queued_behind_the_prefetch(mcvfs, registry, mounts, tmp_path):
    big = replicate(FIXTURE, tmp_path / "big", copies=40)  # ~60 MB of files: more than one prefetch request
    push(mcvfs, big, f"{registry.host}/pf/big:v1")
    layer = layer_of(registry, "pf/big", "v1")
    keys = kernel_dirs(big)
    # 4 MB/s: a prefetch request of 8 MiB takes seconds, so an on-demand read lands in the middle of one.
    with LatencyProxy(registry.host, bandwidth=4e6) as proxy:
        mnt = mounts.mount(f"{proxy.host}/pf/big:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
        read_kernel(mnt.path / keys[0])
        first_reads = len(proxy.blob_requests(layer["digest"]))

        def background_in_flight():
            return [e for e in proxy.blob_requests(layer["digest"])[first_reads:]
                    if e.done is None and e.range and e.range[1] - e.range[0] > 1 << 20]
        wait_until(lambda: background_in_flight(), timeout=GUARD, what="a background request in flight")
        (prefetching,) = background_in_flight()[:1]
        before = len(proxy.blob_requests(layer["digest"]))
        read_kernel(mnt.path / keys[-1])  # far from where the prefetch is
        ours = proxy.blob_requests(layer["digest"])[before:]
        assert ours, "the last kernel came from nowhere"
        on_demand = [e for e in ours if e.range and e.range[1] - e.range[0] <= 1 << 20]
        assert on_demand, [e.range for e in ours]
        # It went out while the prefetch's request was still running, and came back before that one finished.
        for e in on_demand:
            assert e.arrived < (prefetching.done or float("inf")), "the read waited for the prefetch request"
        assert prefetching.done is None or max(e.done for e in on_demand) < prefetching.done


def test_a_small_layer_is_fetched_whole_in_one_request(mcvfs, registry, mounts, tmp_path):
    """Under 4 MiB, one request for the whole layer costs less than footer, TOC and files in turn."""
    push(mcvfs, FIXTURE, f"{registry.host}/pf/small:v1")
    layer = layer_of(registry, "pf/small", "v1")
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/pf/small:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
        for key in kernel_dirs(FIXTURE):
            read_kernel(mnt.path / key)
        assert [e.range for e in proxy.blob_requests(layer["digest"])] == [None]


def test_without_prefetch_every_file_read_once_fetches_each_byte_once(mcvfs, registry, mounts, tmp_path):
    """A cold read of every file of a small layer used to transfer 3.1x the layer (spans bridged other files'
    members and dropped them); now what a span brings is kept."""
    push(mcvfs, FIXTURE, f"{registry.host}/pf/once:v1")
    layer = layer_of(registry, "pf/once", "v1")
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/pf/once:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                           "--prefetch", "none")
        for key in kernel_dirs(FIXTURE):
            read_kernel(mnt.path / key)
        fetched = proxy.blob_requests(layer["digest"])
        assert_disjoint([e.range for e in fetched])
        assert sum(e.body_bytes for e in fetched) <= layer["size"]
        assert not pack_files(tmp_path / "cache"), "--prefetch none wrote a pack"


def test_the_prefetch_stays_within_the_cache_bound(mcvfs, registry, mounts, tmp_path):
    big = replicate(FIXTURE, tmp_path / "big", copies=40)
    push(mcvfs, big, f"{registry.host}/pf/bound:v1")
    layer = layer_of(registry, "pf/bound", "v1")
    files = sum(p.stat().st_size for p in big.rglob("*") if p.is_file())
    bound = files // 3
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/pf/bound:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                           "--cache-max-size", str(bound))
        read_kernel(mnt.path / kernel_dirs(big)[0])
        wait_until(lambda: layer["digest"] in pack_files(tmp_path / "cache"), timeout=GUARD, what="the prefetch")

        def quiet():
            reqs = proxy.blob_requests(layer["digest"])
            return all(e.done is not None for e in reqs) and time.monotonic() - max(e.done for e in reqs) > 2
        wait_until(quiet, timeout=GUARD, what="the prefetch to stop")
        pack = pack_files(tmp_path / "cache")[layer["digest"]]
        assert 0 < pack.stat().st_size <= bound
        assert sum(e.body_bytes for e in proxy.blob_requests(layer["digest"])) < layer["size"]
