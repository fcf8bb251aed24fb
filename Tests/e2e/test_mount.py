"""End-to-end: `mcvfs mount` of a real registry repository, real FUSE, real Triton (issue 3).

One registry per module holds caches compiled by real Triton at test time under a "foreign" build path that is
deleted before any mount (so a hit proves relocation), pushed as MCV images by umoci + skopeo (OCI, Docker
schema2, zstd) and by the registry API (uncompressed, multi-layer with whiteouts, hostile layers, two images
with one KEY). Tests that break the registry (corrupt a blob, stop it) get a registry of their own.
Every mount is torn down by a fixture finalizer (unmount, then SIGKILL of a daemon still alive).
"""
from __future__ import annotations

import gzip
import io
import json
import mmap
import os
import random
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.images import (
    OCI_LAYER_GZIP, OCI_LAYER_TAR, Layout, RegistryAPI, build_mcv_layout, mcv_labels, skopeo_push,
    stage_mcv_tree, tar_bytes, tar_of_tree, zstd_layout,
)
from support.mcvfs import blob_files
from support.mounts import (
    CUDA, HIP, access_errno, compile_foreign, is_mountpoint, kernel_dirs, probe, probe_json, run_triton,
)
from support.net import wait_until
from support.registry import Registry



# -- what the module builds once --------------------------------------------------------------------------------

def layer_digests(api: RegistryAPI, repo: str, tag: str) -> list[str]:
    body, _, _ = api.get_manifest(repo, tag)
    return [d["digest"] for d in json.loads(body)["layers"]]


def tar_gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def file_entry(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def dir_entry(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def kernel_members(src: Path, key: str, skip: tuple[str, ...] = ()) -> list:
    members = [dir_entry("io.triton.cache/"), dir_entry(f"io.triton.cache/{key}/")]
    for p in sorted((src / key).iterdir()):
        if p.name not in skip:
            members.append(file_entry(f"io.triton.cache/{key}/{p.name}", p.read_bytes()))
    return members


@dataclass
class World:
    root: Path
    registry: Registry
    api: RegistryAPI
    cuda_src: Path
    hip_src: Path
    cuda_layout: Layout
    digests: dict[tuple[str, str], str] = field(default_factory=dict)
    layers: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    hostile_kinds: tuple[str, ...] = ()

    def ref(self, repo: str, tag: str | None = None) -> str:
        return f"{self.registry.host}/{repo}" + (f":{tag}" if tag else "")


HOSTILE = {
    # kind -> the one bad entry added to an otherwise good kernel layer
    "traversal": lambda key: [file_entry("io.triton.cache/../../escape-traversal", b"escaped\n")],
    "absolute": lambda key: [file_entry("/tmp/escape-absolute", b"absolute\n")],
    "symlink": lambda key: [(lambda i: (setattr(i, "type", tarfile.SYMTYPE), setattr(i, "linkname", "../../../../etc/passwd"),
                                        (i, None))[-1])(tarfile.TarInfo(f"io.triton.cache/{key}/passwd"))],
    "device": lambda key: [(lambda i: (setattr(i, "type", tarfile.CHRTYPE), setattr(i, "devmajor", 1),
                                       setattr(i, "devminor", 3), (i, None))[-1])(tarfile.TarInfo(f"io.triton.cache/{key}/null"))],
}
HOSTILE_NAMES = {"traversal": None, "absolute": None, "symlink": "passwd", "device": "null"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("mount-world")
    cuda_src = compile_foreign(root, "cuda", CUDA, "add,softmax,matmul", 2)
    hip_src = compile_foreign(root, "hip", HIP, "add,softmax", 1)
    assert not (root / "foreign").exists() or not any((root / "foreign").iterdir()), "the build paths must be gone"
    cuda_layout = build_mcv_layout(cuda_src, root / "layout-cuda", tag="cuda-sm90")
    hip_layout = build_mcv_layout(hip_src, root / "layout-hip", tag="rocm-gfx942")
    with Registry(root / "registry") as registry:
        api = RegistryAPI(registry.host)
        w = World(root, registry, api, cuda_src, hip_src, cuda_layout)

        def push(repo, tag, layout, fmt=None):
            w.digests[(repo, tag)] = skopeo_push(layout, registry.host, repo, tag, fmt=fmt)

        push("e2e/triton", "cuda-sm90", cuda_layout)
        push("e2e/triton", "rocm-gfx942", hip_layout)
        push("e2e/docker", "cuda-sm90", cuda_layout, fmt="v2s2")
        push("e2e/zstd", "cuda-sm90", zstd_layout(cuda_layout, root))
        labels = mcv_labels(cuda_src)
        tree = stage_mcv_tree(cuda_src, root / "tar-tree")
        plain = tar_of_tree(tree)
        w.digests[("e2e/tar", "cuda-sm90")] = api.push_image("e2e/tar", "cuda-sm90", [(plain, OCI_LAYER_TAR)],
                                                             labels=labels, uncompressed_layers=[plain])["digest"]
        key = sorted(kernel_dirs(cuda_src))[0]
        clean = tar_bytes(kernel_members(cuda_src, key))
        api.push_image("e2e/hostile", "clean", [(clean, OCI_LAYER_TAR)], labels=labels, uncompressed_layers=[clean])
        for kind, bad in HOSTILE.items():
            layer = tar_bytes(kernel_members(cuda_src, key) + bad(key))
            api.push_image("e2e/hostile", kind, [(layer, OCI_LAYER_TAR)], labels=labels, uncompressed_layers=[layer])
        w.hostile_kinds = tuple(HOSTILE)
        for repo, tag in list(w.digests):
            w.layers[(repo, tag)] = layer_digests(api, repo, tag)
        yield w


def expected_group(src_bytes: bytes, key: str, root: str) -> dict:
    """docs/relocation.md's rule applied to a source group file: children of KEY move under `root`/KEY."""
    data = json.loads(src_bytes)
    paths = data.get("child_paths")
    if isinstance(paths, dict):
        for name, old in paths.items():
            if os.path.basename(old) == name and os.path.basename(os.path.dirname(old)) == key:
                paths[name] = f"{root}/{key}/{name}"
    return data


def assert_serves(mnt: Path, src: Path, consumer_root: str | None = None) -> None:
    """Every kernel file of `src` is served: byte-equal, group files relocated (size as stat reports it)."""
    root = consumer_root or str(mnt)
    for key in kernel_dirs(src):
        for p in sorted((src / key).iterdir()):
            served = (mnt / key / p.name).read_bytes()
            if p.name.startswith("__grp__"):
                assert json.loads(served) == expected_group(p.read_bytes(), key, root), p.name
                assert os.stat(mnt / key / p.name).st_size == len(served)
            else:
                assert served == p.read_bytes(), p.name


# -- real Triton ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("repo", ["e2e/triton", "e2e/docker"])
def test_real_triton_hits_every_kernel_through_the_mount(world, mounts, tmp_path, repo):
    mark = world.registry.mark()
    mnt = mounts.mount(world.ref(repo), tmp_path / "elsewhere" / "triton", tmp_path / "cache", "--gpu", "cuda:90")
    lines, summary = run_triton(mnt.path, CUDA, kernels="add,softmax,matmul", matmul_configs=2, home=tmp_path / "h")
    assert summary["kernels"] == len(kernel_dirs(world.cuda_src)) == 4
    assert [l["cache_hit"] for l in lines] == [True] * 4, lines
    assert summary["hits"] == 4
    got = [r.uri for r in world.registry.requests_since(mark) if r.method == "GET" and "/blobs/" in r.uri]
    assert any(world.layers[(repo, "cuda-sm90")][0] in u for u in got), got
    if repo == "e2e/triton":
        hip_layer = world.layers[(repo, "rocm-gfx942")][0]
        assert not any(hip_layer in u for u in got), f"the hip image's layer was downloaded: {got}"
        status = mnt.status()
        assert [i["name"] for i in status["used"]] == ["cuda-sm90"], status["used"]
        assert [i["name"] for i in status["skipped"]] == ["rocm-gfx942"] and status["skipped"][0]["reason"]


def test_no_layer_is_fetched_at_mount_time_only_at_first_access(world, mounts, tmp_path):
    mark = world.registry.mark()
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    layer = world.layers[("e2e/triton", "cuda-sm90")][0]
    seen = world.registry.requests_since(mark)
    assert not any(layer in r.uri for r in seen), [r.uri for r in seen]
    assert blob_files(tmp_path / "cache").get(layer) is None
    assert mnt.status()["fetch"]["blobsFetched"] == 0
    key = sorted(kernel_dirs(world.cuda_src))[0]
    assert access_errno(mnt.path / key) == "ok"
    assert any(layer in r.uri and r.method == "GET" for r in world.registry.requests_since(mark))
    # Served as soon as it verified; the blob (and the layer's pack) are committed in the background.
    wait_until(lambda: layer in blob_files(tmp_path / "cache"), timeout=30, what="the layer blob's commit")
    assert mnt.status()["fetch"]["blobsFetched"] >= 1


@pytest.mark.parametrize("repo", ["e2e/zstd", "e2e/tar"])
def test_zstd_and_uncompressed_layers_are_served(world, mounts, tmp_path, repo):
    mnt = mounts.mount(world.ref(repo), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    assert_serves(mnt.path, world.cuda_src)


# -- failures ---------------------------------------------------------------------------------------------------

@pytest.fixture
def own_registry(world, tmp_path):
    """A registry of the test's own holding the cuda image, for tests that break it."""
    registry = Registry(tmp_path / "own-registry").start()
    try:
        digest = skopeo_push(world.cuda_layout, registry.host, "e2e/own", "cuda-sm90")
        layer = layer_digests(RegistryAPI(registry.host), "e2e/own", "cuda-sm90")[0]
        yield registry, digest, layer
    finally:
        registry.stop()


def used_image(status: dict) -> dict:
    """The one used image of a single-image mount's status."""
    (image,) = status["used"]
    return image


def test_corrupted_blob_is_never_served_never_cached_and_counted(world, own_registry, mounts, tmp_path):
    registry, _, layer = own_registry
    path = registry.blob_path(layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    mnt = mounts.mount(f"{registry.host}/e2e/own", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                       "--retry-delay", "1", "--timeout", "5")
    key = sorted(kernel_dirs(world.cuda_src))[0]
    # The only image failed: its kernels are absent for now (Triton compiles them; docs/faults.md).
    assert access_errno(mnt.path / key, op="stat") == "ENOENT"
    assert access_errno(mnt.path / key / "x", op="stat") == "ENOENT"
    assert used_image(mnt.status())["state"] == "failed"
    hex_ = layer.split(":", 1)[1]
    assert layer not in blob_files(tmp_path / "cache")
    stored = [p for p in (tmp_path / "cache").rglob("*") if hex_ in p.name and p.is_file() and p.stat().st_size]
    assert stored == [], f"bytes of a blob that failed verification were kept: {stored}"
    fetch = mnt.status()["fetch"]
    assert fetch["verificationFailures"] >= 1, fetch
    assert fetch["lastErrors"], fetch


def test_registry_down_answers_in_bounded_time_and_daemon_stays_up(world, own_registry, mounts, tmp_path):
    registry, _, _ = own_registry
    mnt = mounts.mount(f"{registry.host}/e2e/own", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                       "--retry-delay", "1", "--timeout", "2")
    registry.stop()
    key = sorted(kernel_dirs(world.cuda_src))[0]
    # Hang guards only: the access must come back (the kernel absent for now), the daemon must survive and retry.
    assert access_errno(mnt.path / key, timeout=90) == "ENOENT"
    probe_json("import time; time.sleep(1.5); print('[]')")
    assert access_errno(mnt.path / key, timeout=90) == "ENOENT"
    assert used_image(mnt.status())["failures"] >= 2, "the retry after --retry-delay must have run"
    assert mnt.pid is not None and os.path.exists(f"/proc/{mnt.pid}")
    fetch = mnt.status()["fetch"]
    assert fetch["fetchErrors"] >= 1, fetch


def test_warm_remount_serves_with_the_registry_stopped(world, own_registry, mounts, tmp_path):
    registry, _, _ = own_registry
    ref = f"{registry.host}/e2e/own"
    first = mounts.mount(ref, tmp_path / "mnt1", tmp_path / "cache", "--gpu", "cuda:90", "--timeout", "2")
    assert_serves(first.path, world.cuda_src)
    first.unmount()
    registry.stop()
    second = mounts.mount(ref, tmp_path / "mnt2", tmp_path / "cache", "--gpu", "cuda:90", "--timeout", "2",
                          "--retry-delay", "1")
    assert_serves(second.path, world.cuda_src)
    lines, summary = run_triton(second.path, CUDA, kernels="add,softmax,matmul", matmul_configs=2,
                                home=tmp_path / "h")
    assert summary["hits"] == summary["kernels"] == 4, lines


def test_hostile_layers_are_never_served(world, mounts, tmp_path):
    key = sorted(kernel_dirs(world.cuda_src))[0]
    control = mounts.mount(world.ref("e2e/hostile", "clean"), tmp_path / "clean", tmp_path / "cache",
                           "--gpu", "cuda:90")
    assert access_errno(control.path / key) == "ok", "the control image (same kernel, no bad entry) must serve"
    for kind in world.hostile_kinds:
        mnt = mounts.mount(world.ref("e2e/hostile", kind), tmp_path / f"mnt-{kind}", tmp_path / "cache",
                           "--gpu", "cuda:90", "--retry-delay", "1")
        assert access_errno(mnt.path / key, op="stat") in ("EIO", "ENOENT"), kind
        assert access_errno(mnt.path / key) != "ok", kind
        if HOSTILE_NAMES[kind]:
            assert access_errno(mnt.path / key / HOSTILE_NAMES[kind], op="lstat") in ("EIO", "ENOENT"), kind
        for name in ("escape-traversal", "escape-absolute", "tmp", "etc"):
            assert access_errno(mnt.path / name, op="lstat") in ("EIO", "ENOENT"), (kind, name)
        mnt.close()
    assert not Path("/tmp/escape-absolute").exists()
    assert not any(p.name.startswith("escape-") for p in tmp_path.rglob("*"))


def test_many_concurrent_readers_get_the_source_bytes(world, mounts, tmp_path):
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    files = [(key, p) for key in kernel_dirs(world.cuda_src) for p in sorted((world.cuda_src / key).iterdir())]
    assert len(files) >= 20
    errors: list[str] = []
    group_seen: dict[str, set] = {}  # every read of one group file must give the same bytes
    lock = threading.Lock()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for key, p in rng.sample(files, len(files)) * 3:
            try:
                served = (mnt.path / key / p.name).read_bytes()
                if p.name.startswith("__grp__"):
                    ok = json.loads(served) == expected_group(p.read_bytes(), key, str(mnt.path))
                    with lock:
                        group_seen.setdefault(f"{key}/{p.name}", set()).add(served)
                else:
                    ok = served == p.read_bytes()
                if not ok:
                    errors.append(f"{key}/{p.name}: differs")
            except OSError as e:
                errors.append(f"{key}/{p.name}: {e}")

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)  # hang guard
    assert not any(t.is_alive() for t in threads), "readers hung"
    assert errors == []
    differing = {k: sorted(v) for k, v in group_seen.items() if len(v) != 1}
    assert not differing, "a group file read differently across reads:\n" + "\n".join(
        f"{k}:\n  " + "\n  ".join(repr(b) for b in v) for k, v in differing.items())
    cubin = next((key, p) for key, p in files if p.suffix == ".cubin")
    with open(mnt.path / cubin[0] / cubin[1].name, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert m[:] == cubin[1].read_bytes()


# -- the tree -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("read_only", [False, True])
def test_makedirs_on_an_existing_key_succeeds(world, mounts, tmp_path, read_only):
    args = ["--gpu", "cuda:90"] + (["--read-only"] if read_only else [])
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", *args)
    code = "\n".join(f"os.makedirs({str(mnt.path / k)!r}, exist_ok=True)" for k in kernel_dirs(world.cuda_src))
    probe(code + "\nprint('[]')")
    key = sorted(kernel_dirs(world.cuda_src))[0]
    assert probe_json(f"print(json.dumps(attempt(os.mkdir, {str(mnt.path / key)!r})))") == ["err", "EEXIST"]


def test_read_only_mount_refuses_every_write_with_erofs(world, mounts, tmp_path):
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                       "--read-only")
    key, name = sorted(kernel_dirs(world.cuda_src).items())[0]
    k = str(mnt.path / key)
    results = probe_json(f"""
k = {k!r}
r = {{
  "create": attempt(lambda: os.close(os.open(k + "/new", os.O_CREAT | os.O_WRONLY, 0o644))),
  "mkdir": attempt(os.mkdir, k + "/tmp.pid_1"),
  "mkdir-root": attempt(os.mkdir, {str(mnt.path / 'NEWKEY')!r}),
  "write-lower": attempt(lambda: os.close(os.open(k + "/{name}.json", os.O_WRONLY))),
  "unlink": attempt(os.unlink, k + "/{name}.json"),
  "rename": attempt(os.rename, k + "/{name}.json", k + "/moved"),
  "chmod": attempt(os.chmod, k + "/{name}.json", 0o600),
  "truncate": attempt(os.truncate, k + "/{name}.json", 0),
  "symlink": attempt(os.symlink, "x", k + "/link"),
  "rmdir": attempt(os.rmdir, k),
}}
print(json.dumps(r))""")
    assert results == {op: ["err", "EROFS"] for op in results}, results
    assert mnt.status().get("upperRoot") is None


def read_ahead_kib(mountpoint: Path) -> int:
    """The kernel's read-ahead window for a mount, from its backing device in sysfs."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] == str(mountpoint):
            return int(Path(f"/sys/class/bdi/{fields[2]}/read_ahead_kb").read_text())
    raise AssertionError(f"{mountpoint} is not mounted")


def test_read_ahead_window_is_raised_once_the_kernel_is_connected(world, mounts, tmp_path):
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    key = sorted(kernel_dirs(world.cuda_src))[0]
    assert (mnt.path / key).is_dir()  # the first request after INIT sets the window
    assert read_ahead_kib(mnt.path) == 4096
    small = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt2", tmp_path / "cache", "--gpu", "cuda:90",
                         "--read-ahead-kib", "512")
    assert (small.path / key).is_dir()
    assert read_ahead_kib(small.path) == 512


def test_control_directory_is_hidden_from_listing(world, mounts, tmp_path):
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    listing = probe_json(f"print(json.dumps(sorted(os.listdir({str(mnt.path)!r}))))")
    assert ".mcvfs" not in listing
    assert sorted(listing) == sorted(kernel_dirs(world.cuda_src)), listing
    status = mnt.status()
    for field_ in ("used", "skipped", "fetch", "tree", "upperRoot", "uppers"):
        assert field_ in status, field_
    assert status["tree"]["kernelsShown"] == 4
    assert status["tree"]["groupFilesRelocated"] >= 4


def test_consumer_root_rewrites_group_files_to_that_root(world, mounts, tmp_path):
    mnt = mounts.mount(world.ref("e2e/triton"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90",
                       "--consumer-root", "/pod/view/triton")
    assert_serves(mnt.path, world.cuda_src, consumer_root="/pod/view/triton")
    for key in kernel_dirs(world.cuda_src):
        for grp in (mnt.path / key).glob("__grp__*.json"):
            for child in json.loads(grp.read_bytes())["child_paths"].values():
                assert child.startswith(f"/pod/view/triton/{key}/"), child


def test_two_images_with_one_key_the_first_tag_gives_it_whole_and_the_other_bytes_are_reported(world, mounts,
                                                                                                   tmp_path):
    src = world.cuda_src
    key = sorted(kernel_dirs(src))[0]
    labels = mcv_labels(src)
    first = tar_bytes(kernel_members(src, key) + [file_entry(f"io.triton.cache/{key}/shared.txt", b"from a\n")])
    second = tar_bytes(kernel_members(src, key) + [file_entry(f"io.triton.cache/{key}/shared.txt", b"from b\n"),
                                                   file_entry(f"io.triton.cache/{key}/only-b.txt", b"b\n")])
    # Pushed in the opposite order of their tags: the documented order is the sorted tag order.
    world.api.push_image("e2e/merge", "b-second", [(tar_gz(second), OCI_LAYER_GZIP)], labels=labels,
                         uncompressed_layers=[second])
    world.api.push_image("e2e/merge", "a-first", [(tar_gz(first), OCI_LAYER_GZIP)], labels=labels,
                         uncompressed_layers=[first])
    mnt = mounts.mount(world.ref("e2e/merge"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    assert (mnt.path / key / "shared.txt").read_bytes() == b"from a\n"
    # A KEY comes whole from one image: nothing of b's copy mixes in.
    assert not (mnt.path / key / "only-b.txt").exists()
    assert sorted(os.listdir(mnt.path / key)) == sorted([p.name for p in (src / key).iterdir()] + ["shared.txt"])
    deadline = time.monotonic() + 60
    while not mnt.status()["tree"].get("conflicts") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mnt.status()["tree"]["conflicts"] == [{"key": key, "served": "a-first", "other": "b-second"}]


def test_multi_layer_image_applies_oci_whiteouts(world, mounts, tmp_path):
    src = world.cuda_src
    keys = sorted(kernel_dirs(src).items())
    (k1, n1), (k2, _), (k3, n3) = keys[0], keys[1], keys[2]
    base = tar_of_tree(stage_mcv_tree(src, tmp_path / "wh-tree"))
    top = tar_bytes([
        dir_entry("io.triton.cache/"),
        file_entry(f"io.triton.cache/{k1}/.wh.{n1}.ttir", b""),
        file_entry(f"io.triton.cache/.wh.{k2}", b""),
        dir_entry(f"io.triton.cache/{k3}/"),
        file_entry(f"io.triton.cache/{k3}/.wh..wh..opq", b""),
        file_entry(f"io.triton.cache/{k3}/{n3}.json", (src / k3 / f"{n3}.json").read_bytes()),
        file_entry(f"io.triton.cache/{k3}/new.txt", b"new\n"),
    ])
    world.api.push_image("e2e/whiteout", "cuda-sm90", [(tar_gz(base), OCI_LAYER_GZIP), (top, OCI_LAYER_TAR)],
                         labels=mcv_labels(src), uncompressed_layers=[base, top])
    mnt = mounts.mount(world.ref("e2e/whiteout"), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    root = sorted(os.listdir(mnt.path))
    assert k2 not in root and k1 in root and k3 in root, root
    assert access_errno(mnt.path / k2, op="stat") == "ENOENT"
    assert sorted(os.listdir(mnt.path / k1)) == sorted(p.name for p in (src / k1).iterdir() if p.name != f"{n1}.ttir")
    assert access_errno(mnt.path / k1 / f"{n1}.ttir", op="stat") == "ENOENT"
    assert sorted(os.listdir(mnt.path / k3)) == sorted([f"{n3}.json", "new.txt"])
    assert (mnt.path / k3 / "new.txt").read_bytes() == b"new\n"
    assert not any(".wh." in n for d in (mnt.path, mnt.path / k1, mnt.path / k3) for n in os.listdir(d))


def test_stale_mount_of_a_killed_daemon_is_cleared_by_the_next_mount(world, mounts, tmp_path):
    ref = world.ref("e2e/triton")
    first = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    key = sorted(kernel_dirs(world.cuda_src))[0]
    assert access_errno(first.path / key) == "ok"
    first.kill()
    assert access_errno(first.path) == "ENOTCONN"  # a listing always reaches the daemon; a stat may not
    second = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    assert is_mountpoint(second.path)
    assert_serves(second.path, world.cuda_src)

