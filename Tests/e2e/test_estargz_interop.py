"""eStargz layers from other tools (issue 23): layers converted by the reference converter (`ctr-remote image convert
--estargz`) mount and serve the files of their source, listing the cache root fetches the TOC and the metadata the
tree resolution reads (not the layer), and no byte of a layer is fetched twice, whatever the prefetch mode.

ctr-remote's layout keeps each directory's files together in tar order, so a kernel's metadata and group file lie
between binaries: what a listing needs is thousands of small members spread over the whole layer. The registry sits
behind the latency proxy (20 ms a request), whose log gives each request's ranges and bytes. Waits are hang guards.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from support.ctr_remote import Containerd
from support.latency_proxy import LatencyProxy
from support.lazy_fetch import FIXTURE, kernel_dirs, layer_of, registry  # noqa: F401
from support.mcvfs import Mcvfs, pack_files
from support.net import wait_until
from test_estargz import read_toc, replicate
from test_service import assert_serves

GUARD = 120
# 180 kernels: a 6 MB layer, past the size a prefetching mount fetches whole, their metadata spread over all of it.
COPIES = 30


def push_gzip(mcvfs: Mcvfs, cache: Path, ref: str) -> None:
    r = mcvfs.run("push", "--plain-http", "--layer-format", "gzip", str(cache), ref, timeout=600)
    assert r.rc == 0, r


@pytest.fixture(scope="module")
def containerd():
    with Containerd() as c:
        yield c


def converted(mcvfs: Mcvfs, containerd: Containerd, registry, source: Path, repo: str) -> dict:
    """`source` pushed as gzip, converted by ctr-remote and pushed as `repo:es`; returns the eStargz layer."""
    push_gzip(mcvfs, source, f"{registry.host}/{repo}:gz")
    containerd.convert(f"{registry.host}/{repo}:gz", f"{registry.host}/{repo}:es")
    return layer_of(registry, repo, "es")


def member_ends(blob: bytes) -> tuple[int, list[dict], dict[int, int]]:
    """(TOC offset, TOC entries, member start → its end: the next member's start)."""
    toc_offset, toc = read_toc(blob)
    entries = json.loads(toc)["entries"]
    starts = sorted({e["offset"] for e in entries if e.get("offset")} | {toc_offset})
    return toc_offset, entries, dict(zip(starts, starts[1:]))


def metadata_bytes(blob: bytes) -> int:
    """Compressed bytes of the members a listing of the root must read: each kernel's metadata and group files."""
    _, entries, end_of = member_ends(blob)
    wanted = {e["offset"] for e in entries if e["type"] == "reg" and e.get("size")
              and (Path(e["name"]).name.startswith("__grp__") or e["name"].endswith(".json"))}
    return sum(end_of[o] - o for o in wanted)


def fetched(proxy: LatencyProxy, digest: str) -> tuple[int, int, list[tuple[int, int]]]:
    """(requests, bytes sent back, byte ranges asked for) of the blob `digest`."""
    requests = proxy.blob_requests(digest)
    ranges = [r for e in requests for r in (e.ranges or [])]
    return len(requests), sum(e.body_bytes for e in requests), ranges


def assert_disjoint(ranges: list[tuple[int, int]]) -> None:
    ordered = sorted(ranges)
    for (a0, a1), (b0, b1) in zip(ordered, ordered[1:]):
        assert a1 < b0, f"bytes {b0}..{min(a1, b1)} were fetched twice: {(a0, a1)} and {(b0, b1)}"


def test_a_ctr_remote_layer_lists_its_root_from_the_toc_and_metadata_and_serves_its_source(
        mcvfs, containerd, registry, mounts, tmp_path):
    source = replicate(FIXTURE, tmp_path / "src", copies=COPIES)
    layer = converted(mcvfs, containerd, registry, source, "interop/list")
    blob = registry.blob_path(layer["digest"]).read_bytes()
    toc_offset, _, _ = member_ends(blob)
    needed = (len(blob) - toc_offset) + metadata_bytes(blob)
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/interop/list:es", tmp_path / "mnt", tmp_path / "cache", "--gpu",
                           "cuda:90", "--prefetch", "none")
        assert sorted(os.listdir(mnt.path)) == kernel_dirs(source)
        requests, sent, ranges = fetched(proxy, layer["digest"])
        print(f"\nlisting the root: {requests} requests ({len(ranges)} ranges), {sent} bytes; layer {len(blob)}, "
              f"TOC + metadata {needed}")
        # Footer, TOC, then the metadata in multi-range requests: its members, a part header each (and the gaps
        # under 512 bytes bridged between them), never the binaries between them.
        assert sent <= needed + 640 * len(ranges), (sent, needed, len(ranges))
        assert sent < len(blob) // 10, (sent, len(blob))
        assert requests <= 2 + -(-len(ranges) // 256) + 2, requests
        assert mnt.status()["used"][0]["tocDigest"] == "verified"

        assert_serves(mnt.path, source)
        requests, sent, ranges = fetched(proxy, layer["digest"])
        print(f"everything: {requests} requests, {sent} bytes")
        assert_disjoint(ranges)
        assert sum(b - a + 1 for a, b in ranges) <= len(blob)


def test_with_the_default_prefetch_no_byte_of_a_ctr_remote_layer_is_fetched_twice(
        mcvfs, containerd, registry, mounts, tmp_path):
    """The prefetch starts at mount; a listing of the root and reads of every file race it."""
    source = replicate(FIXTURE, tmp_path / "src", copies=COPIES)
    layer = converted(mcvfs, containerd, registry, source, "interop/race")
    size = registry.blob_path(layer["digest"]).stat().st_size
    with LatencyProxy(registry.host) as proxy:
        mnt = mounts.mount(f"{proxy.host}/interop/race:es", tmp_path / "mnt", tmp_path / "cache", "--gpu",
                           "cuda:90")
        assert sorted(os.listdir(mnt.path)) == kernel_dirs(source)
        assert_serves(mnt.path, source)
        wait_until(lambda: layer["digest"] in pack_files(tmp_path / "cache"), timeout=GUARD, what="the prefetch")
        requests, sent, ranges = fetched(proxy, layer["digest"])
        print(f"\nlisting, reading everything and the prefetch: {requests} requests, {sent} bytes; layer {size}")
        assert_disjoint(ranges)
        assert sum(b - a + 1 for a, b in ranges) <= size
