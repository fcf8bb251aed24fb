"""`mcvfs push` and `mcvfs extract` against real registries, real third-party tools and real Triton.

Images mcvfs pushes must be ordinary OCI images to skopeo and umoci, carry the layout and labels Model Cache Vault
writes, have the same digest whenever the cache content is the same, and serve Triton cache hits when extracted
or mounted elsewhere. Bad input fails with one clear error line and leaves no tag behind.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from conftest import (BASIC_PASSWORD, BASIC_USER, REPO_ROOT, TOKEN_PASSWORD, TOKEN_USER)
from support.images import OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST
from support.reach import reachable
from support.registry import require_tool

FIXTURES = REPO_ROOT / "Tests" / "Fixtures"
TRITON_FIXTURES = {
    "cuda-90": (FIXTURES / "triton-3.9.0" / "cuda-90", "cuda", "90", 32),
    "cuda-80": (FIXTURES / "triton-3.9.0" / "cuda-80", "cuda", "80", 32),
    "hip-gfx942": (FIXTURES / "triton-3.9.0" / "hip-gfx942", "hip", "gfx942", 64),
    "mcv-vector-add": (FIXTURES / "mcv-examples" / "vector-add-cache", "cuda", "75", 32),
    "mcv-vector-add-rocm": (FIXTURES / "mcv-examples" / "vector-add-cache-rocm", "hip", "gfx90a", 64),
}
VLLM_FIXTURE = FIXTURES / "mcv-examples" / "vllm-cache"
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
MAKE_CACHE = REPO_ROOT / "scripts" / "make-triton-cache.py"


# -- helpers ------------------------------------------------------------------------------------------------

def push(mcvfs, cache: Path, ref: str, *args: str, creds: str | None = None):
    argv = ["push", "--plain-http", *args]
    if creds:
        argv += ["--creds", creds]
    return mcvfs.run(*argv, str(cache), ref, timeout=300)


def pushed(result) -> dict[str, str]:
    """`<digest>\t<reference>` lines -> {reference: digest}."""
    assert result.rc == 0, result
    out = {}
    for line in result.stdout.splitlines():
        digest, ref = line.split("\t")
        assert digest.startswith("sha256:") and len(digest) == 71, result
        out[ref] = digest
    assert out, result
    return out


def skopeo(*args: str) -> subprocess.CompletedProcess:
    tool = require_tool("skopeo")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=300)


def skopeo_inspect(ref: str, creds: str | None = None, raw: bool = False) -> dict:
    argv = ["inspect", "--tls-verify=false"] + (["--raw"] if raw else []) + (["--creds", creds] if creds else [])
    out = skopeo(*argv, ref)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    tool = require_tool("umoci")
    out = subprocess.run([tool, "unpack", "--image", f"{layout}:{tag}", str(bundle)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return bundle / "rootfs"


def assert_same_tree(a: Path, b: Path) -> None:
    """Same names, same types, same bytes (recursively)."""
    names_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*"))
    names_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*"))
    assert names_a == names_b
    for name in names_a:
        pa, pb = a / name, b / name
        assert pa.is_dir() == pb.is_dir(), name
        if pa.is_file():
            assert pa.read_bytes() == pb.read_bytes(), name


def kernel_metadata(cache: Path) -> list[dict]:
    out = []
    for meta in sorted(cache.rglob("*.json")):
        if meta.name.startswith("__grp__"):
            continue
        data = json.loads(meta.read_text())
        if isinstance(data, dict) and "hash" in data and isinstance(data.get("target"), dict):
            out.append(data)
    return out


def manifest_exists(host: str, repo: str, tag: str, creds: str | None = None) -> bool:
    auth = tuple(creds.split(":", 1)) if creds else None
    r = requests.head(f"http://{host}/v2/{repo}/manifests/{tag}", auth=auth, timeout=30,
                      headers={"Accept": OCI_MANIFEST})
    return r.status_code == 200


def triton(cache_dir: Path, target: str = "cuda:90:32", out: Path | None = None) -> dict:
    """Runs the real Triton compile script; returns its summary line (`hits`, `kernels`)."""
    assert PYTHON.exists(), f"{PYTHON} is missing: run scripts/setup"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env["TRITON_CACHE_DIR"] = str(cache_dir)
    argv = [str(PYTHON), str(MAKE_CACHE), "--target", target]
    if out is not None:
        argv += ["--out", str(out)]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    summary = lines[-1]
    assert "hits" in summary, r.stdout
    return summary


# -- push: interop with skopeo and umoci, MCV's layout and labels ------------------------------------------

@pytest.mark.parametrize("name", sorted(TRITON_FIXTURES))
def test_pushed_triton_cache_is_an_ordinary_oci_image_in_mcv_layout(mcvfs, anon, tmp_path, name):
    cache, backend, arch, warp = TRITON_FIXTURES[name]
    ref = f"{anon.host}/push/{name}:v1"
    digest = pushed(push(mcvfs, cache, ref))[ref]

    info = skopeo_inspect(f"docker://{ref}")
    assert info["Digest"] == digest
    raw = skopeo_inspect(f"docker://{ref}", raw=True)
    assert raw["mediaType"] == OCI_MANIFEST and raw["config"]["mediaType"] == OCI_CONFIG
    assert [l["mediaType"] for l in raw["layers"]] == [OCI_LAYER_GZIP]

    # Labels, parsed the way MCV parses them.
    labels = info["Labels"]
    summary = json.loads(labels["cache.triton.image/summary"])
    assert summary == {"targets": [{"backend": backend, "arch": arch, "warp_size": warp}]}
    kernels = kernel_metadata(cache)
    assert labels["cache.triton.image/entry-count"] == str(len(kernels))
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert labels["cache.triton.image/cache-size-bytes"] == str(size)
    assert labels["cache.triton.image/variant"] == "multi"
    assert labels["model.cache.image/type"] == "triton"
    assert json.loads(labels["model.cache.image/summary"]) == summary
    assert labels["model.cache.image/entry-count"] == str(len(kernels))

    # skopeo copies it to an OCI layout; umoci unpacks that to exactly the source cache plus MCV's manifest.
    layout = tmp_path / "layout"
    out = skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1")
    assert out.returncode == 0, out.stderr
    rootfs = umoci_unpack(layout, "v1", tmp_path / "bundle")
    # eStargz (the default format) carries its TOC as the archive's last entry, at the root, beside MCV's dirs,
    # and the spec's no-prefetch landmark (nothing prioritized) as its first.
    assert sorted(p.name for p in rootfs.iterdir()) == [".no.prefetch.landmark", "io.triton.cache",
                                                        "io.triton.manifest", "stargz.index.json"]
    assert_same_tree(rootfs / "io.triton.cache", cache)
    manifest = json.loads((rootfs / "io.triton.manifest" / "manifest.json").read_text())
    entries = manifest["triton"]
    assert sorted(e["hash"] for e in entries) == sorted(k["hash"] for k in kernels)
    for e in entries:
        assert (e["backend"], e["arch"], e["warp_size"]) == (backend, arch, warp)
        assert {"num_stages", "num_warps", "debug"} <= set(e)


def test_pushed_vllm_cache_has_mcv_vllm_layout(mcvfs, anon, tmp_path):
    ref = f"{anon.host}/push/vllm:v1"
    digest = pushed(push(mcvfs, VLLM_FIXTURE, ref))[ref]
    info = skopeo_inspect(f"docker://{ref}")
    assert info["Digest"] == digest
    labels = info["Labels"]
    assert labels["model.cache.image/type"] == "vllm"
    assert labels["cache.vllm.image/entry-count"] == "1"
    assert json.loads(labels["cache.vllm.image/summary"])["targets"]
    layout = tmp_path / "layout"
    assert skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1").returncode == 0
    rootfs = umoci_unpack(layout, "v1", tmp_path / "bundle")
    assert_same_tree(rootfs / "io.vllm.cache", VLLM_FIXTURE)
    manifest = json.loads((rootfs / "io.vllm.manifest" / "manifest.json").read_text())
    assert [e["vllmHash"] for e in manifest["vllm"]] == ["d4ec7c2a7d"]


def test_pushing_the_same_content_twice_gives_the_same_digest_and_uploads_nothing(mcvfs, anon, tmp_path):
    cache = TRITON_FIXTURES["cuda-80"][0]
    first = pushed(push(mcvfs, cache, f"{anon.host}/push/repro:a"))
    # The same content elsewhere, with other mtimes and modes on directories: only content counts.
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    for p in copy.rglob("*"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    mark = anon.registry.mark()
    second = pushed(push(mcvfs, copy, f"{anon.host}/push/repro:b"))
    assert list(first.values()) == list(second.values())
    uploads = [r for r in anon.registry.requests_since(mark) if "/blobs/uploads" in r.uri]
    assert uploads == [], f"blobs the registry had were sent again: {uploads}"


@pytest.mark.parametrize("fmt,media_type", [("tar", OCI_LAYER_TAR), ("gzip", OCI_LAYER_GZIP),
                                            ("zstd", OCI_LAYER_ZSTD)])
def test_layer_formats_are_reproducible(mcvfs, anon, fmt, media_type):
    cache = TRITON_FIXTURES["mcv-vector-add"][0]
    a = pushed(push(mcvfs, cache, f"{anon.host}/push/fmt-{fmt}:a", "--layer-format", fmt))
    b = pushed(push(mcvfs, cache, f"{anon.host}/push/fmt-{fmt}:b", "--layer-format", fmt))
    assert list(a.values()) == list(b.values())
    raw = skopeo_inspect(f"docker://{anon.host}/push/fmt-{fmt}:a", raw=True)
    assert [l["mediaType"] for l in raw["layers"]] == [media_type]


def test_large_blobs_go_up_in_chunks_with_the_same_digest(mcvfs, anon):
    cache = TRITON_FIXTURES["cuda-90"][0]
    monolithic = pushed(push(mcvfs, cache, f"{anon.host}/push/chunks-a:v1"))
    mark = anon.registry.mark()
    chunked = pushed(push(mcvfs, cache, f"{anon.host}/push/chunks-b:v1", "--chunk-size", "65536"))
    assert list(monolithic.values()) == list(chunked.values())
    patches = [r for r in anon.registry.requests_since(mark) if r.method == "PATCH"]
    assert len(patches) > 1, "a layer above --chunk-size was not sent in chunks"
    assert all(r.status == 202 for r in patches), patches
    assert skopeo_inspect(f"docker://{anon.host}/push/chunks-b:v1")["Digest"] == list(chunked.values())[0]


def test_push_with_basic_auth(mcvfs, basic):
    creds = f"{BASIC_USER}:{BASIC_PASSWORD}"
    ref = f"{basic.host}/push/basic:v1"
    digest = pushed(push(mcvfs, TRITON_FIXTURES["hip-gfx942"][0], ref, creds=creds))[ref]
    assert skopeo_inspect(f"docker://{ref}", creds=creds)["Digest"] == digest


def test_push_with_bearer_token_auth(mcvfs, token):
    creds = f"{TOKEN_USER}:{TOKEN_PASSWORD}"
    ref = f"{token.host}/push/bearer:v1"
    digest = pushed(push(mcvfs, TRITON_FIXTURES["cuda-90"][0], ref, creds=creds))[ref]
    assert skopeo_inspect(f"docker://{ref}", creds=creds)["Digest"] == digest


def test_output_oci_layout_matches_the_pushed_image(mcvfs, anon, tmp_path):
    cache = TRITON_FIXTURES["cuda-80"][0]
    layout = tmp_path / "layout"
    r = mcvfs.run("push", "--output", f"oci-layout:{layout}", str(cache), "example.com/org/cache:cuda-sm80")
    assert r.rc == 0, r
    local = r.stdout.split("\t")[0]
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    info = skopeo_inspect(f"oci:{layout}:cuda-sm80")
    assert info["Digest"] == local
    remote = pushed(push(mcvfs, cache, f"{anon.host}/push/layout:v1"))
    assert list(remote.values()) == [local]
    rootfs = umoci_unpack(layout, "cuda-sm80", tmp_path / "bundle")
    assert_same_tree(rootfs / "io.triton.cache", cache)


def test_split_per_target_pushes_one_tag_per_target_and_extract_picks_by_gpu(mcvfs, anon, tmp_path):
    mixed = tmp_path / "mixed"
    for name in ("cuda-90", "hip-gfx942"):
        shutil.copytree(TRITON_FIXTURES[name][0], mixed, dirs_exist_ok=True)
    repo = f"{anon.host}/push/split"
    tags = pushed(push(mcvfs, mixed, f"{repo}:v1", "--split", "per-target"))
    assert sorted(tags) == [f"{repo}:v1-cuda-sm90", f"{repo}:v1-hip-gfx942"]
    for ref, expected in ((f"{repo}:v1-cuda-sm90", ("cuda", "90", 32)), (f"{repo}:v1-hip-gfx942", ("hip", "gfx942", 64))):
        summary = json.loads(skopeo_inspect(f"docker://{ref}")["Labels"]["cache.triton.image/summary"])
        assert summary == {"targets": [dict(zip(("backend", "arch", "warp_size"), expected))]}
    # The repository as a whole (no tag), as mount reads it: only the matching tag is used.
    out = tmp_path / "extracted"
    r = mcvfs.run("extract", "--plain-http", "--gpu", "hip:gfx942", "--cache-dir", str(tmp_path / "c"), repo, str(out))
    assert r.rc == 0, r
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in TRITON_FIXTURES["hip-gfx942"][0].iterdir())
    # And mount, which reads the repository the same way.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = mcvfs.run("mount", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "m"), repo, str(mnt))
    assert r.rc == 0, r
    try:
        listed = sorted(p.name for p in mnt.iterdir())
    finally:
        u = mcvfs.run("unmount", str(mnt))
    assert u.rc == 0, u
    assert listed == sorted(p.name for p in TRITON_FIXTURES["cuda-90"][0].iterdir())


# -- extract ------------------------------------------------------------------------------------------------

def test_extract_writes_only_compatible_kernels_with_relocated_groups(mcvfs, anon, tmp_path):
    mixed = tmp_path / "mixed"
    for name in ("cuda-90", "cuda-80"):
        shutil.copytree(TRITON_FIXTURES[name][0], mixed, dirs_exist_ok=True)
    ref = f"{anon.host}/push/mixed:v1"
    pushed(push(mcvfs, mixed, ref))
    out = tmp_path / "out"
    r = mcvfs.run("extract", "--plain-http", "--gpu", "cuda:80", "--cache-dir", str(tmp_path / "c"), ref, str(out))
    assert r.rc == 0, r
    source = TRITON_FIXTURES["cuda-80"][0]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in source.iterdir())
    assert "skipped 6 kernel(s)" in r.stdout, r
    for group in out.rglob("__grp__*.json"):
        for child, path in json.loads(group.read_text())["child_paths"].items():
            assert path == str(out / group.parent.name / child)
            assert Path(path).is_file()
    for f in source.rglob("*"):
        if f.is_file() and not f.name.startswith("__grp__"):
            assert filecmp.cmp(f, out / f.relative_to(source), shallow=False), f


def test_extract_then_real_triton_hits_every_kernel(mcvfs, anon, tmp_path):
    ref = f"{anon.host}/push/triton-extract:cuda-sm90"
    pushed(push(mcvfs, TRITON_FIXTURES["cuda-90"][0], ref))
    out = tmp_path / "triton-cache"
    r = mcvfs.run("extract", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "c"), ref, str(out))
    assert r.rc == 0, r
    summary = triton(out)
    assert summary["kernels"] == 6 and summary["hits"] == 6, summary


def test_round_trip_compile_push_mount_and_extract_hit(mcvfs, anon, tmp_path):
    # Compile for real, in a directory that is gone before the cache is used again: Triton must hit through the
    # relocated group files, not by reading the original paths.
    built = tmp_path / "build" / "cache"
    first = triton(built, out=built)
    assert first["hits"] == 0, first
    ref = f"{anon.host}/push/roundtrip:cuda-sm90"
    pushed(push(mcvfs, built, ref))
    shutil.rmtree(tmp_path / "build")

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = mcvfs.run("mount", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "c1"),
                  f"{anon.host}/push/roundtrip", str(mnt))
    assert r.rc == 0, r
    try:
        mounted = triton(mnt)
    finally:
        u = mcvfs.run("unmount", str(mnt))
    assert u.rc == 0, u
    assert mounted["hits"] == mounted["kernels"] == first["kernels"], mounted

    out = tmp_path / "extracted"
    r = mcvfs.run("extract", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "c2"), ref, str(out))
    assert r.rc == 0, r
    extracted = triton(out)
    assert extracted["hits"] == extracted["kernels"] == first["kernels"], extracted


def test_extract_never_replaces_or_writes_through_existing_entries(mcvfs, anon, tmp_path):
    ref = f"{anon.host}/push/keep:v1"
    pushed(push(mcvfs, TRITON_FIXTURES["mcv-vector-add"][0], ref))
    out = tmp_path / "out"
    key = next(TRITON_FIXTURES["mcv-vector-add"][0].iterdir()).name
    (out / key).mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (out / key / "add_kernel.cubin").symlink_to(victim)
    r = mcvfs.run("extract", "--plain-http", "--gpu", "cuda:75", "--cache-dir", str(tmp_path / "c"), ref, str(out))
    assert r.rc == 0, r
    assert victim.read_text() == "untouched"
    assert (out / key / "add_kernel.cubin").is_symlink()
    assert (out / key / "add_kernel.json").is_file()
    assert "1 existing path(s)" in r.stdout, r
    assert not [p for p in out.iterdir() if p.name.startswith(".mcvfs-extract")]


def test_extract_with_no_matching_gpu_warns_naming_the_targets_and_writes_nothing(mcvfs, anon, tmp_path):
    # The rule mount and fetch follow too (test_newcomer.py): a warning naming what the repository has.
    ref = f"{anon.host}/push/nomatch:v1"
    pushed(push(mcvfs, TRITON_FIXTURES["cuda-90"][0], ref))
    out = tmp_path / "out"
    r = mcvfs.run("extract", "--plain-http", "--gpu", "hip:gfx942", "--cache-dir", str(tmp_path / "c"), ref, str(out))
    assert r.rc == 0, r
    assert f"mcvfs: warning: no image of {ref} matches hip:gfx942; the repository has cuda:90:32" in r.stderr, r
    assert not out.exists() or not any(out.iterdir())


# -- bad input ----------------------------------------------------------------------------------------------

def test_empty_directory_is_a_clear_error_and_pushes_nothing(mcvfs, anon, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = push(mcvfs, empty, f"{anon.host}/push/bad:empty")
    assert r.rc == 1, r
    assert "empty" in r.error_line, r
    assert not manifest_exists(anon.host, "push/bad", "empty")


def test_directory_that_is_not_a_cache_is_a_clear_error(mcvfs, anon, tmp_path):
    notes = tmp_path / "notes"
    (notes / "src").mkdir(parents=True)
    (notes / "README.md").write_text("hello")
    (notes / "src" / "main.c").write_text("int main(void) { return 0; }")
    r = push(mcvfs, notes, f"{anon.host}/push/bad:notcache")
    assert r.rc == 1, r
    assert "not a Triton or vLLM cache" in r.error_line, r
    assert not manifest_exists(anon.host, "push/bad", "notcache")


def test_symlink_leaving_the_cache_is_refused(mcvfs, anon, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(TRITON_FIXTURES["mcv-vector-add"][0], cache)
    (tmp_path / "secret").write_text("host secret")
    key = next(cache.iterdir())
    (key / "leak.json").symlink_to("../../secret")
    r = push(mcvfs, cache, f"{anon.host}/push/bad:symlink")
    assert r.rc == 1, r
    assert "outside the cache directory" in r.error_line, r
    assert not manifest_exists(anon.host, "push/bad", "symlink")


def test_temp_dirs_and_lock_files_are_left_out(mcvfs, anon, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(TRITON_FIXTURES["mcv-vector-add"][0], cache)
    key = next(cache.iterdir())
    (key / "tmp.pid_123_abc").mkdir()
    (key / "tmp.pid_123_abc" / "add_kernel.cubin").write_bytes(b"partial")
    (key / "add_kernel.json.lock").write_text("")
    ref = f"{anon.host}/push/clean:v1"
    clean = pushed(push(mcvfs, cache, ref))
    plain = pushed(push(mcvfs, TRITON_FIXTURES["mcv-vector-add"][0], f"{anon.host}/push/clean:plain"))
    assert list(clean.values()) == list(plain.values()), "temp dirs or lock files changed the image"


def test_unreadable_file_is_a_clear_error(mcvfs, anon):
    # Root reads any file, so run mcvfs as an unprivileged user over a world-readable copy with one file closed.
    setpriv = require_tool("setpriv")
    work = Path(tempfile.mkdtemp(prefix="mcvfs-unreadable-"))
    try:
        work.chmod(0o755)
        cache = work / "cache"
        shutil.copytree(TRITON_FIXTURES["mcv-vector-add"][0], cache)
        for p in [cache, *cache.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        closed = next(cache.glob("*/add_kernel.ptx"))
        closed.chmod(0)
        home = work / "home"
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        env = {**mcvfs.env, "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "XDG_CACHE_HOME": str(home),
               "XDG_CONFIG_HOME": str(home), "MCVFS_CACHE_DIR": str(home / "cache"), "TMPDIR": str(home)}
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                reachable(mcvfs.binary), "push", "--plain-http", str(cache), f"{anon.host}/push/bad:unreadable"]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
        errors = [l for l in out.stderr.splitlines() if l.startswith("mcvfs: error: ")]
        assert out.returncode == 1, out
        assert len(errors) == 1 and "cannot read" in errors[0] and "add_kernel.ptx" in errors[0], out.stderr
        assert "Permission denied" in errors[0], out.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert not manifest_exists(anon.host, "push/bad", "unreadable")


def test_registry_refusing_the_upload_leaves_no_tag(mcvfs, token):
    # The token registry lets anyone pull but only known users push.
    r = push(mcvfs, TRITON_FIXTURES["cuda-90"][0], f"{token.host}/push/refused:v1")
    assert r.rc == 1, r
    assert "unauthorized" in r.error_line.lower() or "denied" in r.error_line.lower(), r
    creds = f"{TOKEN_USER}:{TOKEN_PASSWORD}"
    assert not manifest_exists_with_token(token, "push/refused", "v1", creds)


def manifest_exists_with_token(pop, repo: str, tag: str, creds: str) -> bool:
    out = skopeo("inspect", "--tls-verify=false", "--creds", creds, f"docker://{pop.host}/{repo}:{tag}")
    return out.returncode == 0


def test_push_to_a_digest_reference_is_a_clear_error(mcvfs, anon):
    r = push(mcvfs, TRITON_FIXTURES["mcv-vector-add"][0], f"{anon.host}/push/bad@sha256:{'0' * 64}")
    assert r.rc == 1, r
    assert "needs a tag" in r.error_line, r
