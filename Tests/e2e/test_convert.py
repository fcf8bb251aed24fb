"""`mcvfs convert SRC DST` (issue 14): an existing cache image, of any layout mcvfs mounts, pushed again as one
eStargz layer with the same files and labels, so a mount fetches it lazily and nothing is recompiled.

Sources are third parties' images (umoci + skopeo gzip, Docker schema2, zstd, uncompressed, several layers with a
whiteout); the output must mount, serve the same bytes as the source through a mount, extract with plain `tar`, and
carry exactly the source's labels."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.images import OCI_LAYER_GZIP, RegistryAPI, mcv_labels, stage_mcv_tree, tar_of_tree
from support.mcvfs import Mcvfs
from support.mounts import MountPool
from support.registry import require_tool

TOC_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"


def manifest(api: RegistryAPI, repo: str, ref: str) -> dict:
    return json.loads(api.get_manifest(repo, ref)[0])


def labels(api: RegistryAPI, repo: str, ref: str) -> dict:
    config = json.loads(api.get_blob(repo, manifest(api, repo, ref)["config"]["digest"]))
    return config.get("config", {}).get("Labels") or {}


def served(mounts: MountPool, ref: str, where: Path) -> dict[str, bytes]:
    """Every file a fresh mount of `ref` serves (at the same mountpoint each time, so relocated group files
    compare equal), by path."""
    mnt = mounts.mount(ref, where / "mnt", where / f"cache-{hashlib.sha256(ref.encode()).hexdigest()[:8]}",
                       "--gpu", "all", "--read-only")
    files = {str(p.relative_to(mnt.path)): p.read_bytes() for p in sorted(mnt.path.rglob("*")) if p.is_file()}
    mnt.unmount()
    return files


def convert(mcvfs: Mcvfs, src: str, dst: str, *args: str):
    r = mcvfs.run("convert", "--plain-http", *args, src, dst, timeout=300)
    assert r.rc == 0, r
    digest, name = r.stdout.strip().split("\t")
    assert digest.startswith("sha256:") and name.endswith(dst.split("/", 1)[1]), r
    return digest


@pytest.mark.parametrize("tag", ["oci", "docker", "zstd", "tar"])
def test_convert_output_mounts_serves_the_same_bytes_extracts_with_tar_and_keeps_the_labels(
        mcvfs, anon, mounts, tmp_path, tag):
    api = anon.api()
    src, dst = f"{anon.host}/org/formats:{tag}", f"{anon.host}/convert/{tag}:estargz"
    convert(mcvfs, src, dst)

    out = manifest(api, f"convert/{tag}", "estargz")
    (layer,) = out["layers"]
    assert layer["mediaType"] == OCI_LAYER_GZIP and TOC_ANNOTATION in layer["annotations"], layer
    assert labels(api, f"convert/{tag}", "estargz") == labels(api, "org/formats", tag)

    # Plain tar extracts it: the source layer's files, plus the TOC and the landmark eStargz adds at the root.
    source_files = {}
    for l in manifest(api, "org/formats", tag)["layers"]:
        raw = api.get_blob("org/formats", l["digest"])
        mode = "r:gz" if raw[:2] == b"\x1f\x8b" else "r:"
        if raw[:4] == b"\x28\xb5\x2f\xfd":
            raw = subprocess.run([require_tool("zstd"), "-dc"], input=raw, capture_output=True, check=True).stdout
            mode = "r:"
        with tarfile.open(fileobj=io.BytesIO(raw), mode=mode) as t:
            source_files.update({m.name.lstrip("./"): t.extractfile(m).read() for m in t if m.isfile()})
    extracted = tmp_path / "x"
    extracted.mkdir()
    (tmp_path / "layer.tar.gz").write_bytes(api.get_blob(f"convert/{tag}", layer["digest"]))
    subprocess.run(["tar", "xzf", str(tmp_path / "layer.tar.gz"), "-C", str(extracted)], check=True)
    got = {str(p.relative_to(extracted)): p.read_bytes() for p in extracted.rglob("*") if p.is_file()}
    assert set(got) - set(source_files) == {"stargz.index.json", ".no.prefetch.landmark"}
    assert {k: v for k, v in got.items() if k in source_files} == source_files

    # Through a mount, byte for byte what the source serves.
    assert served(mounts, dst, tmp_path) == served(mounts, src, tmp_path)


def test_a_layered_image_with_a_whiteout_converts_to_what_it_shows(mcvfs, anon, layouts, mounts, tmp_path):
    """Two layers, the second deleting a kernel directory of the first and adding a file: the converted image
    has one layer holding what a runtime would extract, nothing of the deleted directory."""
    api = anon.api()
    tree = stage_mcv_tree(layouts.cuda90_dir, tmp_path / "tree")
    gone = sorted(p.name for p in (tree / "io.triton.cache").iterdir())[0]
    base = tar_of_tree(tree)
    top = io.BytesIO()
    with tarfile.open(fileobj=top, mode="w") as t:
        for name, data in [(f"io.triton.cache/.wh.{gone}", b""), ("io.triton.cache/added.txt", b"from the top layer")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    api.push_image("convert/layered", "v1", [(base, "application/vnd.oci.image.layer.v1.tar"),
                                             (top.getvalue(), "application/vnd.oci.image.layer.v1.tar")],
                   labels=mcv_labels(layouts.cuda90_dir), uncompressed_layers=[base, top.getvalue()])
    convert(mcvfs, f"{anon.host}/convert/layered:v1", f"{anon.host}/convert/layered:estargz")
    assert len(manifest(api, "convert/layered", "estargz")["layers"]) == 1
    converted = served(mounts, f"{anon.host}/convert/layered:estargz", tmp_path)
    assert converted == served(mounts, f"{anon.host}/convert/layered:v1", tmp_path)
    assert converted["added.txt"] == b"from the top layer"
    assert not any(path.startswith(gone + "/") or path == gone for path in converted), sorted(converted)


def test_convert_with_a_hot_set_puts_those_entries_first(mcvfs, anon, layouts, tmp_path):
    api = anon.api()
    keys = sorted(p.name for p in layouts.cuda90_dir.iterdir() if p.is_dir())
    (tmp_path / "hot").write_text(f"{keys[2]}\nnot-in-this-image\n")
    r = mcvfs.run("convert", "--plain-http", "--hot-set", str(tmp_path / "hot"),
                  f"{anon.host}/org/formats:oci", f"{anon.host}/convert/hot:v1", timeout=300)
    assert r.rc == 0, r
    assert "hot-set entr" in r.stderr, r  # the name the image lacks is reported, not fatal
    (layer,) = manifest(api, "convert/hot", "v1")["layers"]
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(api.get_blob("convert/hot", layer["digest"])))]
    landmark = names.index(".prefetch.landmark")
    assert all(n.startswith(("io.triton.cache/" + keys[2], "io.triton.cache")) for n in names[:landmark]), names
    assert any(n.startswith(f"io.triton.cache/{keys[2]}/") for n in names[:landmark])
    assert not any(n.startswith(f"io.triton.cache/{keys[0]}/") for n in names[:landmark])


def test_convert_names_one_image(mcvfs, anon):
    r = mcvfs.run("convert", "--plain-http", f"{anon.host}/org/cache", f"{anon.host}/convert/many:v1")
    assert r.rc == 1
    assert "one at a time" in r.error_line, r
    r = mcvfs.run("convert", "--plain-http", f"{anon.host}/org/formats:oci", f"{anon.host}/convert/x@sha256:{'0' * 64}")
    assert r.rc == 1 and "needs a tag" in r.error_line, r
