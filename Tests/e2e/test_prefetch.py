"""Background prefetch of eStargz layers (issues 14, 23): from the mount on (`--prefetch all`, the default), the hot
set and then the rest of each layer arrive in large ranges below on-demand reads; nothing is fetched twice; the cache
bound holds.

The registry sits behind the latency proxy (20 ms per request, and a bandwidth cap where a test needs a prefetch to
take a while), whose log gives each request's byte range and when it arrived and finished. Waits are hang guards."""
from __future__ import annotations

import time
from pathlib import Path

from support.latency_proxy import LatencyProxy
from support.lazy_fetch import FIXTURE, kernel_dirs, layer_of, read_kernel, registry  # noqa: F401
from support.mcvfs import Mcvfs, blob_files, pack_files
from support.net import wait_until
from support.registry import Registry
from test_estargz import replicate

GUARD = 120


def push(mcvfs: Mcvfs, cache: Path, ref: str, *args: str) -> None:
    r = mcvfs.run("push", "--plain-http", *args, str(cache), ref, timeout=600)
    assert r.rc == 0, r


def asked(exchanges) -> list[tuple[int, int]]:
    """Every byte range the requests asked for (each range of a multi-range request)."""
    return [r for e in exchanges for r in (e.ranges or [])]


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
        assert_disjoint(asked(fetched))
        assert sum(b - a + 1 for a, b in asked(fetched)) <= layer["size"]
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


def test_the_prefetch_starts_at_mount_before_any_lookup(mcvfs, registry, mounts, tmp_path):
    """A DaemonSet mounts long before pods start: the layers arrive meanwhile, and the first pod's reads find them
    local. Nothing here touches the mount until the prefetch is done."""
    large = replicate(FIXTURE, tmp_path / "large", copies=30)
    push(mcvfs, large, f"{registry.host}/pf/mount:large")
    push(mcvfs, FIXTURE, f"{registry.host}/pf/mount:small")
    with LatencyProxy(registry.host) as proxy:
        for tag, source, arrived in (("large", large, lambda layer, cache: layer in pack_files(cache)),
                                     ("small", FIXTURE, lambda layer, cache: layer in blob_files(cache))):
            layer = layer_of(registry, "pf/mount", tag)["digest"]
            cache = tmp_path / f"cache-{tag}"
            mnt = mounts.mount(f"{proxy.host}/pf/mount:{tag}", tmp_path / f"mnt-{tag}", cache, "--gpu", "cuda:90")
            # The large layer's files land in its pack, the small layer whole, both with no lookup at all.
            wait_until(lambda: arrived(layer, cache), timeout=GUARD, what=f"the {tag} layer to arrive")
            fetched = proxy.blob_requests(layer)
            assert_disjoint(asked(fetched))
            assert sum(e.body_bytes for e in fetched) <= registry.blob_path(layer).stat().st_size
            proxy.reset()
            for key in kernel_dirs(source):
                read_kernel(mnt.path / key)
            assert proxy.blob_requests(layer) == [], f"{tag}: a read after the prefetch went to the registry"


def test_an_on_demand_read_is_never_queued_behind_the_prefetch(mcvfs, registry, mounts, tmp_path):
    # ~25 MB of layer: the last kernel lies past the two 8 MiB prefetch requests in flight at first (a read of a file
    # one of them holds joins it rather than fetch its bytes twice).
    big = replicate(FIXTURE, tmp_path / "big", copies=120)
    push(mcvfs, big, f"{registry.host}/pf/big:v1")
    layer = layer_of(registry, "pf/big", "v1")
    keys = kernel_dirs(big)
    # 4 MB/s: a prefetch request of 8 MiB takes seconds, so an on-demand read lands in the middle of one.
    with LatencyProxy(registry.host, bandwidth=4e6) as proxy:
        mnt = mounts.mount(f"{proxy.host}/pf/big:v1", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")

        def size(e) -> int:
            return sum(b - a + 1 for a, b in (e.ranges or []))

        def background_in_flight():  # the prefetch started at mount
            return [e for e in proxy.blob_requests(layer["digest"]) if e.done is None and size(e) > 1 << 20]
        wait_until(lambda: background_in_flight(), timeout=GUARD, what="a background request in flight")
        (prefetching,) = background_in_flight()[:1]
        before = len(proxy.blob_requests(layer["digest"]))
        read_kernel(mnt.path / keys[-1])  # far from where the prefetch is
        ours = proxy.blob_requests(layer["digest"])[before:]
        assert ours, "the last kernel came from nowhere"
        on_demand = [e for e in ours if 0 < size(e) <= 1 << 20]
        assert on_demand, [e.ranges for e in ours]
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
        assert_disjoint(asked(fetched))
        assert sum(b - a + 1 for a, b in asked(fetched)) <= layer["size"]
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
