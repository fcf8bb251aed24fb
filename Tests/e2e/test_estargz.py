"""eStargz layers (issue 8): what `mcvfs push` writes by default, and how a mount reads it lazily.

The layer must stay an ordinary tar.gz (tar, umoci), and a mount must fetch only the footer, the TOC and the
ranges of what is read, verifying every file against the TOC the manifest pins. Request counts come from the
counting proxy in front of the registry (it records each request's Range header). Timeouts are hang guards."""
from __future__ import annotations

import base64
import errno
import gzip
import hashlib
import json
import mmap
import os
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from support.images import RegistryAPI, file_digest
from support.mounts import ON_DEMAND
from support.proxy import FaultProxy
from support.registry import Registry, require_tool
from test_service import Service, assert_serves, expected_files, mounted  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
TOC_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"


# -- helpers ------------------------------------------------------------------------------------------------

@pytest.fixture
def registry(tmp_path):
    with Registry(tmp_path / "registry") as r:
        yield r


@pytest.fixture
def service(mcvfs, tmp_path):
    s = Service(mcvfs, tmp_path)
    yield s
    s.stop_all()


def push(mcvfs, cache: Path, ref: str, *args: str) -> str:
    r = mcvfs.run("push", "--plain-http", *args, str(cache), ref, timeout=600)
    assert r.rc == 0, r
    return r.stdout.split("\t")[0].strip()


def replicate(fixture: Path, dest: Path, copies: int) -> Path:
    """A larger cache: every kernel entry of `fixture` copied under `copies` distinct keys, each file made
    distinct (group files name their own key; other files get a trailer), like many real compiles."""
    dest.mkdir(parents=True)
    for i in range(copies):
        for entry in sorted(p for p in fixture.iterdir() if p.is_dir()):
            key = base64.b32encode(hashlib.sha256(f"{entry.name}/{i}".encode()).digest()).decode()[:52]
            out = dest / key
            out.mkdir()
            for f in entry.iterdir():
                data = f.read_bytes()
                if f.name.startswith("__grp__"):
                    data = data.replace(entry.name.encode(), key.encode())
                elif f.suffix == ".json":
                    doc = json.loads(data)
                    doc["mcvfs_copy"] = i
                    data = json.dumps(doc).encode()
                else:
                    data += f"\n// copy {i}\n".encode()
                (out / f.name).write_bytes(data)
    return dest


def manifest_of(registry: Registry, repo: str, ref: str) -> dict:
    body, _, _ = RegistryAPI(registry.host).get_manifest(repo, ref)
    return json.loads(body)


def layer_bytes(registry: Registry, repo: str, ref: str) -> tuple[dict, bytes]:
    layer = manifest_of(registry, repo, ref)["layers"][0]
    return layer, registry.blob_path(layer["digest"]).read_bytes()


def read_toc(blob: bytes) -> tuple[int, bytes]:
    """(TOC offset, TOC JSON) from the footer, the way any eStargz reader finds them."""
    footer = blob[-51:]
    assert footer[:4] == b"\x1f\x8b\x08\x04" and footer[12:14] == b"SG" and footer[32:38] == b"STARGZ", footer
    offset = int(footer[16:32], 16)
    tar = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob[offset:-51])
    with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as t:
        member = t.next()
        assert member.name == "stargz.index.json"
        return offset, t.extractfile(member).read()


def ranges_for(proxy: FaultProxy, digest: str) -> list[str | None]:
    """The Range header (None for a whole-blob GET) of each GET of the blob `digest`, in order."""
    with proxy._lock:
        seen = list(proxy.seen)
    return [next((v for k, v in r.headers.items() if k.lower() == "range"), None)
            for r in seen if r.method == "GET" and r.path.split("?")[0].endswith(f"/blobs/{digest}")]


def range_bytes(ranges: list[str | None]) -> int:
    """Bytes the Range headers ask for (a multi-range header counts each of its ranges)."""
    total = 0
    for r in ranges:
        for part in r.removeprefix("bytes=").split(","):
            start, end = part.strip().split("-")
            total += int(end) - int(start) + 1
    return total


# -- the layer -----------------------------------------------------------------------------------------------

def test_default_push_is_estargz_and_extracts_with_tar_and_umoci(mcvfs, registry, tmp_path):
    digest = push(mcvfs, FIXTURE, f"{registry.host}/es/plain:v1")
    layer, blob = layer_bytes(registry, "es/plain", "v1")
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    _, toc = read_toc(blob)
    assert layer["annotations"][TOC_ANNOTATION] == "sha256:" + hashlib.sha256(toc).hexdigest()
    doc = json.loads(toc)
    regular = {e["name"]: e for e in doc["entries"] if e["type"] == "reg"}
    for rel, data in expected_files(FIXTURE).items():
        assert regular["io.triton.cache/" + rel]["digest"] == "sha256:" + hashlib.sha256(data).hexdigest(), rel
    # Every file's offset starts a gzip member holding its bytes.
    for name, e in regular.items():
        if e["size"] and name.startswith("io.triton.cache/"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert d.decompress(blob[e["offset"]:], e["size"])[:e["size"]] == \
                (FIXTURE / name.removeprefix("io.triton.cache/")).read_bytes()[:e["size"]], name

    require_tool("tar")
    out = tmp_path / "tar"
    out.mkdir()
    (tmp_path / "layer.tar.gz").write_bytes(blob)
    subprocess.run(["tar", "xzf", str(tmp_path / "layer.tar.gz"), "-C", str(out)], check=True)
    assert expected_files(out / "io.triton.cache") == expected_files(FIXTURE)
    assert (out / "io.triton.manifest" / "manifest.json").is_file()
    config = json.loads(registry.blob_path(manifest_of(registry, "es/plain", "v1")["config"]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()]

    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{registry.host}/es/plain:v1",
                    f"oci:{tmp_path / 'oci'}:v1"], check=True, capture_output=True)
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{tmp_path / 'oci'}:v1", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    assert expected_files(tmp_path / "bundle" / "rootfs" / "io.triton.cache") == expected_files(FIXTURE)
    assert digest.startswith("sha256:")


def test_other_layer_formats_stay_available(mcvfs, registry):
    push(mcvfs, FIXTURE, f"{registry.host}/es/gz:v1", "--layer-format", "gzip")
    layer = manifest_of(registry, "es/gz", "v1")["layers"][0]
    assert TOC_ANNOTATION not in (layer.get("annotations") or {})


# -- the lazy mount --------------------------------------------------------------------------------------------

def entry_member_bytes(blob: bytes, key: str) -> int:
    """Compressed bytes of the gzip members holding the files of `<KEY>/` (a member runs to the next one)."""
    toc_offset, toc = read_toc(blob)
    entries = [e for e in json.loads(toc)["entries"] if e["type"] in ("reg", "chunk") and e.get("size")]
    starts = sorted({e["offset"] for e in entries} | {toc_offset})
    end_of = dict(zip(starts, starts[1:]))
    mine = {e["offset"] for e in entries if e["name"].removeprefix("io.triton.cache/").startswith(key + "/")}
    return sum(end_of[o] - o for o in mine)


def test_first_kernel_needs_only_footer_toc_and_its_entry(mcvfs, service, registry, tmp_path):
    big = replicate(FIXTURE, tmp_path / "big", copies=20)  # 120 kernels, ~30 MB
    push(mcvfs, big, f"{registry.host}/es/big:v1")
    layer, blob = layer_bytes(registry, "es/big", "v1")
    with FaultProxy(registry.host) as proxy:
        d = service.start(f"{proxy.host}/es/big:v1", "--gpu", "cuda:90", *ON_DEMAND, "--cache-dir", str(tmp_path / "c"))
        assert ranges_for(proxy, layer["digest"]) == [], "mounting fetched layer bytes before any use"
        first = sorted(p.name for p in big.iterdir())[7]
        for f in sorted((big / first).iterdir()):
            assert (d.mountpoint / first / f.name).read_bytes() or f.name.startswith("__grp__")
        ranges = ranges_for(proxy, layer["digest"])
        assert None not in ranges, f"a whole-blob GET: {ranges}"
        # Footer, TOC, then that entry alone: its kernel metadata and group file (read to decide whether it
        # shows and to relocate it) and its binaries, which the writer keeps in two runs of the blob. No other
        # kernel's metadata is read: the mount resolves a <KEY>/ directory when it is looked up.
        assert len(ranges) <= 4, ranges
        assert ranges[0] == f"bytes={len(blob) - 51}-{len(blob) - 1}", ranges
        assert range_bytes(ranges[2:]) == entry_member_bytes(blob, first), ranges
        status = json.loads((d.mountpoint / ".mcvfs" / "status.json").read_text())
        assert status["tree"]["kernelsShown"] == 1, status["tree"]

        # Everything else reads byte-identical to the source (group files point into the mount).
        assert_serves(d.mountpoint, big)
        before = len(ranges_for(proxy, layer["digest"]))
        assert_serves(d.mountpoint, big)
        assert len(ranges_for(proxy, layer["digest"])) == before, "fetched twice"
        assert d.terminate() == 0, d.stderr()

        # A second mount over the same cache fetches nothing at all.
        proxy.reset_counts()
        d2 = service.start(f"{proxy.host}/es/big:v1", "--gpu", "cuda:90", *ON_DEMAND, "--cache-dir", str(tmp_path / "c"),
                           name="again")
        assert_serves(d2.mountpoint, big)
        assert ranges_for(proxy, layer["digest"]) == []


@pytest.mark.parametrize("mode", [[], ["--read-only"]], ids=["overlay", "read-only"])
def test_listing_the_root_reads_all_metadata_in_one_request(mcvfs, service, registry, tmp_path, mode):
    big = replicate(FIXTURE, tmp_path / "big", copies=20)  # 120 kernels
    push(mcvfs, big, f"{registry.host}/es/list:v1")
    layer, blob = layer_bytes(registry, "es/list", "v1")
    with FaultProxy(registry.host) as proxy:
        d = service.start(f"{proxy.host}/es/list:v1", "--gpu", "cuda:90", *ON_DEMAND, "--cache-dir", str(tmp_path / "c"), *mode)
        assert sorted(os.listdir(d.mountpoint)) == sorted(p.name for p in big.iterdir())
        # Footer, TOC and the metadata run: every directory resolved together, not one fetch per directory.
        ranges = ranges_for(proxy, layer["digest"])
        assert len(ranges) == 3, ranges
        assert range_bytes(ranges) < len(blob) // 5, (range_bytes(ranges), len(blob))
        assert_serves(d.mountpoint, big)


def test_large_files_read_the_same_with_direct_io_and_map_privately(mcvfs, service, registry, tmp_path):
    kernel = sorted(p for p in FIXTURE.iterdir() if p.is_dir())[0]
    src = tmp_path / "src"
    shutil.copytree(kernel, src / kernel.name)
    big = next((src / kernel.name).glob("*.cubin"))
    big.write_bytes(os.urandom(12 << 20))  # past the 8 MiB direct I/O threshold, and several eStargz chunks
    push(mcvfs, src, f"{registry.host}/es/large:v1")
    for name, options in (("direct", []), ("cached", ["--direct-io-from", "off"])):
        d = service.start(f"{registry.host}/es/large:v1", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "c"),
                          *options, name=name)
        served = d.mountpoint / kernel.name / big.name
        assert served.read_bytes() == big.read_bytes(), name
        with open(served, "rb") as fh:  # what dlopen does: a private, read-only mapping
            mapped = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
            assert mapped[:] == big.read_bytes(), name
            mapped.close()
        assert_serves(d.mountpoint, src)
        assert d.terminate() == 0, d.stderr()


def test_corrupted_member_gives_eio_for_that_file_only(mcvfs, service, registry, tmp_path):
    push(mcvfs, FIXTURE, f"{registry.host}/es/bad:v1")
    layer, blob = layer_bytes(registry, "es/bad", "v1")
    _, toc = read_toc(blob)
    entries = [e for e in json.loads(toc)["entries"] if e["type"] == "reg" and e["name"].endswith(".cubin")]
    victim = entries[0]
    data = bytearray(blob)
    for i in range(victim["offset"] + 40, victim["offset"] + 240):
        data[i] ^= 0x5A
    registry.blob_path(layer["digest"]).write_bytes(bytes(data))

    cache = tmp_path / "c"
    d = service.start(f"{registry.host}/es/bad:v1", "--gpu", "cuda:90", *ON_DEMAND, "--cache-dir", str(cache))
    rel = victim["name"].removeprefix("io.triton.cache/")
    with pytest.raises(OSError) as e:
        (d.mountpoint / rel).read_bytes()
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:  # still refused, not cached half-way
        (d.mountpoint / rel).read_bytes()
    assert e.value.errno == errno.EIO
    assert victim["digest"] not in {"sha256:" + p.name for p in (cache / "blobs" / "sha256").iterdir()}
    # Every other file, its neighbours included, reads fine.
    for other, data in expected_files(FIXTURE).items():
        if other != rel and not Path(other).name.startswith("__grp__"):
            assert (d.mountpoint / other).read_bytes() == data, other


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("prefetch", ["none", "hot", "all"])
def test_a_wrong_toc_annotation_serves_the_layer_whole_in_every_mode(
        mcvfs, service, registry, tmp_path, prefetch, size):
    """stargz-snapshotter's rule, the same whatever the prefetch and the layer's size (a prefetching mount fetches a
    layer under 4 MiB whole anyway): a TOC that does not match the annotation is not used; the layer is downloaded
    whole, verified by its own digest, and served; status says so."""
    source = FIXTURE if size == "small" else replicate(FIXTURE, tmp_path / "large", copies=30)
    push(mcvfs, source, f"{registry.host}/es/toc:v1")
    layer = manifest_of(registry, "es/toc", "v1")["layers"][0]
    assert (layer["size"] < 4 << 20) == (size == "small"), layer["size"]
    manifest = manifest_of(registry, "es/toc", "v1")
    manifest["layers"][0]["annotations"][TOC_ANNOTATION] = "sha256:" + "0" * 64
    RegistryAPI(registry.host).push_manifest("es/toc", "forged", json.dumps(manifest).encode(), manifest["mediaType"])

    with FaultProxy(registry.host) as proxy:
        d = service.start(f"{proxy.host}/es/toc:forged", "--gpu", "cuda:90", "--prefetch", prefetch,
                          "--cache-dir", str(tmp_path / "c"))
        keys = sorted(p.name for p in source.iterdir() if p.is_dir())
        assert sorted(os.listdir(d.mountpoint)) == keys
        for f in sorted((source / keys[0]).iterdir()):
            if not f.name.startswith("__grp__"):
                assert (d.mountpoint / keys[0] / f.name).read_bytes() == f.read_bytes(), f.name
        # The whole layer in one GET (after, at most, the footer and the TOC that did not match).
        assert None in ranges_for(proxy, layer["digest"]), ranges_for(proxy, layer["digest"])
        image = json.loads((d.mountpoint / ".mcvfs" / "status.json").read_text())["used"][0]
        assert image["tocDigest"].startswith("mismatch: served from the whole layer verified by its digest"), image
        assert image["state"] == "loaded", image


def test_a_matching_toc_annotation_is_reported_verified(mcvfs, service, registry, tmp_path):
    push(mcvfs, FIXTURE, f"{registry.host}/es/ok:v1")
    d = service.start(f"{registry.host}/es/ok:v1", "--gpu", "cuda:90", *ON_DEMAND, "--cache-dir", str(tmp_path / "c"))
    assert sorted(os.listdir(d.mountpoint))
    assert json.loads((d.mountpoint / ".mcvfs" / "status.json").read_text())["used"][0]["tocDigest"] == "verified"
