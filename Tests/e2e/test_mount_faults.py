"""One bad image never takes the mount down (issue 13): a real registry behind the fault-injecting proxy, real
mounts, two images of one repository, A and B, with only B faulted or malformed.

For every fault kind the proxy has (500, stall, close mid-body, a 1 byte/s drip, 429, 429/503 with
`Retry-After: 1000`), for gzip images (A in the local cache, B not) and eStargz images (both fetched lazily
through the proxy): A serves, byte for byte; B's names are absent for now (ENOENT: Triton then compiles them into
the overlay, where an error would make its makedirs raise); status names B, its error and its next retry.
Then B malformed in ways only seen at fetch, configs that are not usable, an index whose child is gone, and
eStargz file ranges that stall or throttle once the TOC is in.

Every mount here uses `--timeout 2`, so each operation must end within mcvfs's budget of 2 x 2 + 1 = 5 s.
Elapsed times are measured inside the probe around the one call, and held to that budget with generous slack
for a loaded machine (SLACK): a loose bound on fault handling, never a speed assertion. Subprocess timeouts are
hang guards."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from support.images import OCI_INDEX, OCI_MANIFEST, RegistryAPI, build_mcv_layout, skopeo_push
from support.mcvfs import Mcvfs
from support.mounts import ON_DEMAND, kernel_dirs, probe_json
from support.net import free_port
from support.proxy import FaultProxy
from support.reach import reachable
from support.registry import Registry, require_tool
from test_estargz import replicate

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
TIMEOUT = 2
BUDGET = 2 * TIMEOUT + 1  # docs/faults.md: what one operation may take
SLACK = 5  # for a machine shared by many test runs
RETRY_DELAY = 30  # long enough that B stays failed for the whole test
MOUNT_ARGS = ("--gpu", "cuda:90", "--timeout", str(TIMEOUT), "--retry-delay", str(RETRY_DELAY))


# -- the registry -------------------------------------------------------------------------------------------

@dataclass
class Pair:
    """A repository with two cache images: A (the fixture) and B (the same kernels under other keys)."""
    repo: str
    a_src: Path
    b_src: Path
    manifests: dict[str, dict] = field(default_factory=dict)  # tag -> manifest

    def layer(self, tag: str) -> dict:
        return self.manifests[tag]["layers"][0]


@dataclass
class World:
    registry: Registry
    api: RegistryAPI
    pairs: dict[str, Pair]
    warm_cache: Path  # holds A of the gzip pair, fetched and indexed

    def ref(self, host: str, repo: str, tag: str | None = None) -> str:
        return f"{host}/{repo}" + (f":{tag}" if tag else "")


def manifest(api: RegistryAPI, repo: str, tag: str) -> dict:
    body, _, _ = api.get_manifest(repo, tag)
    return json.loads(body)


def copy_image(api: RegistryAPI, source: Pair, tag: str, repo: str, new_tag: str, *, layer: dict | None = None,
               config: bytes | None = None) -> dict:
    """Pushes `source`'s image `tag` to `repo:new_tag`, optionally with its layer descriptor or config replaced
    (the blobs go along, so the manifest is complete unless the change says otherwise)."""
    m = json.loads(json.dumps(source.manifests[tag]))
    for blob in [m["config"], *m["layers"]]:
        api.push_blob(repo, api.get_blob(source.repo, blob["digest"]))
    if layer is not None:
        m["layers"][0] = layer
    if config is not None:
        m["config"] = {**m["config"], "digest": api.push_blob(repo, config), "size": len(config)}
    api.push_manifest(repo, new_tag, json.dumps(m).encode(), m.get("mediaType", OCI_MANIFEST))
    return m


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("isolation")
    b_src = replicate(FIXTURE, root / "b-src", 1)
    mcvfs = Mcvfs(root / "home")
    with Registry(root / "registry") as registry:
        api = RegistryAPI(registry.host)
        pairs = {"gzip": Pair("iso/gzip", FIXTURE, b_src), "estargz": Pair("iso/estargz", FIXTURE, b_src)}
        for tag, src in (("a", FIXTURE), ("b", b_src)):
            layout = build_mcv_layout(src, root / f"layout-{tag}", tag=tag)
            skopeo_push(layout, registry.host, "iso/gzip", tag)
            r = mcvfs.run("push", "--plain-http", str(src), f"{registry.host}/iso/estargz:{tag}", timeout=300)
            assert r.rc == 0, r
        for pair in pairs.values():
            for tag in ("a", "b"):
                pair.manifests[tag] = manifest(api, pair.repo, tag)
        assert "containerd.io/snapshot/stargz/toc.digest" in pairs["estargz"].layer("b").get("annotations", {})
        assert pairs["gzip"].layer("b")["mediaType"].endswith("gzip")

        warm = root / "warm-cache"
        r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(warm),
                      f"{registry.host}/iso/gzip:a", timeout=300)
        assert r.rc == 0, r
        yield World(registry, api, pairs, warm)


# -- probes -------------------------------------------------------------------------------------------------

def timed(op: str, path: Path) -> tuple[str, float]:
    """('ok' or the errno name, seconds) of one stat or read of `path`, timed inside a fresh process."""
    call = {"stat": "os.stat(p)", "read": "open(p, 'rb').read()", "listdir": "os.listdir(p)"}[op]
    code = f"""
import time
p = {str(path)!r}
t = time.monotonic()
try:
    {call}
    r = "ok"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps([r, time.monotonic() - t]))
"""
    result, seconds = probe_json(code, timeout=120)
    return result, seconds


def served_digests(mountpoint: Path, src: Path) -> dict[str, str]:
    """sha256 (or the errno) of every file of `src` as the mount serves it, read in a fresh process."""
    rels = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    code = f"""
import hashlib
out = {{}}
for rel in {rels!r}:
    try:
        out[rel] = hashlib.sha256(open(os.path.join({str(mountpoint)!r}, rel), "rb").read()).hexdigest()
    except OSError as e:
        out[rel] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""
    return probe_json(code, timeout=120)


def assert_a_serves(mountpoint: Path, src: Path) -> None:
    """Every file of A reads whole: byte-equal, group files (relocated by the mount) readable."""
    served = served_digests(mountpoint, src)
    for rel, got in served.items():
        if Path(rel).name.startswith("__grp__"):
            assert len(got) == 64, (rel, got)
        else:
            assert got == hashlib.sha256((src / rel).read_bytes()).hexdigest(), (rel, got)


def assert_within_budget(seconds: float, what: str) -> None:
    assert seconds < BUDGET + SLACK, f"{what} took {seconds:.1f}s; the budget is {BUDGET}s (+{SLACK}s slack)"


def used(status: dict, name: str) -> dict:
    return next(image for image in status["used"] if image["name"] == name)


def a_key_file(pair: Pair) -> Path:
    key = sorted(kernel_dirs(pair.a_src))[0]
    return Path(key) / f"{kernel_dirs(pair.a_src)[key]}.json"


def b_key(pair: Pair) -> str:
    return sorted(kernel_dirs(pair.b_src))[0]


def cache_for(world: World, fmt: str, tmp_path: Path) -> Path:
    """A's layers already local for the gzip pair (the cached image); nothing for eStargz (both lazily fetched)."""
    cache = tmp_path / "cache"
    if fmt == "gzip":
        shutil.copytree(world.warm_cache, cache, symlinks=True)
    else:
        cache.mkdir()
    return cache


# -- every fault kind, on B's layer -------------------------------------------------------------------------

FAULTS = {
    "500": lambda proxy, digest: proxy.fail("blobs", 500, 1000, match=digest),
    "stall": lambda proxy, digest: proxy.stall("blobs", match=digest),
    "close-mid-body": lambda proxy, digest: proxy.break_body("blobs", "close", after=40, match=digest),
    "drip-1-byte-per-second": lambda proxy, digest: proxy.break_body("blobs", "drip", rate=1, match=digest),
    "429": lambda proxy, digest: proxy.fail("blobs", 429, 1000, match=digest),
    "429-retry-after-1000": lambda proxy, digest: proxy.fail("blobs", 429, 1000, {"Retry-After": "1000"},
                                                             match=digest),
    "503-retry-after-1000": lambda proxy, digest: proxy.fail("blobs", 503, 1000, {"Retry-After": "1000"},
                                                             match=digest),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("fmt", ["gzip", "estargz"])
def test_a_serves_while_b_is_faulted_and_b_is_absent_within_the_budget(world, mounts, tmp_path, fmt, fault):
    pair = world.pairs[fmt]
    b_layer = pair.layer("b")["digest"]
    with FaultProxy(world.registry.host) as proxy:
        FAULTS[fault](proxy, b_layer)
        mnt = mounts.mount(world.ref(proxy.host, pair.repo), tmp_path / "mnt", cache_for(world, fmt, tmp_path),
                           *MOUNT_ARGS)
        result, seconds = timed("read", mnt.path / a_key_file(pair))
        assert result == "ok", (result, mnt.daemon_log())
        assert_within_budget(seconds, "the first read of A")

        result, seconds = timed("stat", mnt.path / b_key(pair))
        assert result == "ENOENT", result
        assert_within_budget(seconds, f"B's name under {fault}")
        assert any(b_layer in r.path for r in proxy.seen if r.kind == "blobs"), "the fault was never exercised"

        # Within the retry delay B answers at once, and costs A nothing.
        result, seconds = timed("stat", mnt.path / b_key(pair))
        assert result == "ENOENT", result
        assert_within_budget(seconds, "B's name again")
        assert_a_serves(mnt.path, pair.a_src)
        names = probe_json(f"print(json.dumps(sorted(os.listdir({str(mnt.path)!r}))))")
        assert set(kernel_dirs(pair.a_src)) <= set(names), "the root must list what is available"
        assert not set(kernel_dirs(pair.b_src)) & set(names)

        status = mnt.status()
        b = used(status, "b")
        assert b["state"] == "failed" and b["failures"] >= 1, b
        assert b["error"] and b["nextRetry"], b
        assert used(status, "a")["state"] == "loaded", status["used"]
        assert mnt.pid is not None and os.path.exists(f"/proc/{mnt.pid}"), "the daemon died"


def test_a_slow_layer_download_holds_no_other_image_back_even_in_another_mount(world, mounts, tmp_path):
    """B's layer keeps arriving, slowly (4 KiB/s: no stall), for far longer than the budget. Neither this mount's
    A, nor a second mount sharing the cache directory (they share its lease lock), waits for that download."""
    pair = world.pairs["gzip"]
    cache = cache_for(world, "gzip", tmp_path)
    with FaultProxy(world.registry.host) as proxy:
        proxy.break_body("blobs", "drip", rate=4096, match=pair.layer("b")["digest"])
        first = mounts.mount(world.ref(proxy.host, pair.repo), tmp_path / "mnt1", cache, *MOUNT_ARGS)
        result, seconds = timed("stat", first.path / b_key(pair))
        assert result == "ENOENT", "B's download cannot have finished"
        assert_within_budget(seconds, "a lookup waiting for a slow download")
        second = mounts.mount(world.ref(proxy.host, pair.repo), tmp_path / "mnt2", cache, *MOUNT_ARGS,
                              "--upper", str(tmp_path / "upper2"))
        assert used(first.status(), "b")["state"] == "loading", "the second mount waited for B's download"
        for mnt in (second, first):
            result, seconds = timed("read", mnt.path / a_key_file(pair))
            assert result == "ok", (result, mnt.daemon_log())
            assert_within_budget(seconds, "A's first read beside B's download")


def test_metrics_name_the_failing_image_its_error_and_its_next_retry(world, mounts, tmp_path):
    pair = world.pairs["gzip"]
    port = free_port()
    with FaultProxy(world.registry.host) as proxy:
        FAULTS["500"](proxy, pair.layer("b")["digest"])
        mnt = mounts.mount(world.ref(proxy.host, pair.repo), tmp_path / "mnt", cache_for(world, "gzip", tmp_path),
                           *MOUNT_ARGS, "--metrics-listen", f"127.0.0.1:{port}")
        assert timed("stat", mnt.path / b_key(pair))[0] == "ENOENT"
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert 'mcvfs_image_state{image="b",state="failed"} 1' in text, text
    assert 'mcvfs_image_state{image="a",state="loaded"} 1' in text, text
    assert 'mcvfs_image_load_failures_total{image="b"} 1' in text, text
    assert 'mcvfs_image_next_retry_timestamp_seconds{image="b"}' in text, text
    assert 'mcvfs_image_last_error_info{image="b",error="layer ' in text and "500" in text, text


# -- B malformed in ways only a fetch shows -------------------------------------------------------------------

MALFORMED = {
    "size-2^62": lambda layer, blob: {**layer, "size": 2 ** 62},
    "size-minus-5": lambda layer, blob: {**layer, "size": -5},
    "size-smaller-than-the-blob": lambda layer, blob: {**layer, "size": len(blob) - 100},
    "layer-deleted": None,
}


@pytest.mark.parametrize("kind", MALFORMED)
@pytest.mark.parametrize("fmt", ["gzip", "estargz"])
def test_a_serves_while_b_is_malformed(world, mounts, tmp_path, fmt, kind):
    pair = world.pairs[fmt]
    repo = f"iso/malformed-{fmt}-{kind.replace('^', '')}"
    copy_image(world.api, pair, "a", repo, "a")
    layer = pair.layer("b")
    if MALFORMED[kind] is None:
        copy_image(world.api, pair, "b", repo, "b")
        r = world.api._request("DELETE", f"/v2/{repo}/blobs/{layer['digest']}", scope=f"repository:{repo}:*")
        assert r.status_code == 202, r.text
    else:
        blob = world.api.get_blob(pair.repo, layer["digest"])
        copy_image(world.api, pair, "b", repo, "b", layer=MALFORMED[kind](layer, blob))
    mnt = mounts.mount(world.ref(world.registry.host, repo), tmp_path / "mnt", cache_for(world, fmt, tmp_path),
                       *MOUNT_ARGS)
    result, seconds = timed("read", mnt.path / a_key_file(pair))
    assert result == "ok", (result, mnt.daemon_log())
    result, seconds = timed("stat", mnt.path / b_key(pair))
    assert result == "ENOENT", result
    assert_within_budget(seconds, f"B's name when {kind}")
    assert_a_serves(mnt.path, pair.a_src)
    b = used(mnt.status(), "b")
    assert b["state"] == "failed" and b["error"], b


# -- tags that cannot be used are skipped, with the reason --------------------------------------------------

BAD_CONFIGS = {"notjson": b"this is not json", "empty": b"", "array": b"[]"}


@pytest.fixture(scope="module")
def bad_configs(world) -> str:
    """iso/configs: the good tag `a`, a tag per unusable config, and one whose config size lies."""
    repo = "iso/configs"
    gzip = world.pairs["gzip"]
    copy_image(world.api, gzip, "a", repo, "a")
    for tag, config in BAD_CONFIGS.items():
        copy_image(world.api, gzip, "a", repo, tag, config=config)
    m = json.loads(json.dumps(gzip.manifests["a"]))
    m["config"]["size"] += 7
    world.api.push_manifest(repo, "wrongsize", json.dumps(m).encode(), m.get("mediaType", OCI_MANIFEST))
    return repo


def test_a_repository_with_unusable_configs_mounts_and_says_why_each_is_skipped(world, bad_configs, mounts,
                                                                                 tmp_path):
    mnt = mounts.mount(world.ref(world.registry.host, bad_configs), tmp_path / "mnt", tmp_path / "cache",
                       *MOUNT_ARGS)
    assert_a_serves(mnt.path, world.pairs["gzip"].a_src)
    status = mnt.status()
    assert [image["name"] for image in status["used"]] == ["a"]
    skipped = {image["name"]: image["reason"] for image in status["skipped"]}
    for tag in [*BAD_CONFIGS, "wrongsize"]:
        assert "config" in skipped.get(tag, ""), skipped
    assert "descriptor says" in skipped["wrongsize"], skipped


@pytest.mark.parametrize("tag", [*BAD_CONFIGS, "wrongsize"])
def test_a_named_tag_with_an_unusable_config_fails_the_mount_clearly(world, bad_configs, mounts, tmp_path, tag):
    mnt = mounts.mount(world.ref(world.registry.host, bad_configs, tag), tmp_path / "mnt", tmp_path / "cache",
                       *MOUNT_ARGS, check=False)
    assert mnt.result.rc == 1, mnt.result
    line = mnt.result.error_line
    assert tag in line and "config" in line and "unusable" in line, line


def test_an_index_whose_child_manifest_is_gone_mounts_the_rest_and_says_why(world, mounts, tmp_path):
    repo = "iso/index"
    gzip = world.pairs["gzip"]
    children = []
    for tag in ("a", "b"):
        m = copy_image(world.api, gzip, tag, repo, f"child-{tag}")
        body, media_type, digest = world.api.get_manifest(repo, f"child-{tag}")
        children.append({"mediaType": media_type, "digest": digest, "size": len(body)})
    world.api.push_index(repo, "multi", children, OCI_INDEX)
    gone = children[1]["digest"]
    r = world.api._request("DELETE", f"/v2/{repo}/manifests/{gone}", scope=f"repository:{repo}:*")
    assert r.status_code == 202, r.text

    mnt = mounts.mount(world.ref(world.registry.host, repo, "multi"), tmp_path / "mnt", tmp_path / "cache",
                       *MOUNT_ARGS)
    assert_a_serves(mnt.path, gzip.a_src)
    status = mnt.status()
    assert [image["name"] for image in status["used"]] == ["multi[0]"]
    skipped = {image["name"]: image["reason"] for image in status["skipped"]}
    assert gone.removeprefix("sha256:")[:12] in skipped.get("multi[1]", ""), skipped

    # An index with nothing left is unusable: named on its own, it fails the mount and says why.
    world.api.push_index(repo, "only", [children[0]], OCI_INDEX)
    r = world.api._request("DELETE", f"/v2/{repo}/manifests/{children[0]['digest']}", scope=f"repository:{repo}:*")
    assert r.status_code == 202, r.text
    lonely = mounts.mount(world.ref(world.registry.host, repo, "only"), tmp_path / "mnt2", tmp_path / "cache2",
                          *MOUNT_ARGS, check=False)
    assert lonely.result.rc == 1, lonely.result
    line = lonely.result.error_line
    assert "unusable" in line and children[0]["digest"].removeprefix("sha256:")[:12] in line, line


# -- eStargz: the TOC is in, then B's file ranges fail ------------------------------------------------------

RANGE_FAULTS = {
    "stall-mid-body": lambda proxy, digest: proxy.break_body("blobs", "stall", after=16, match=digest, skip=2),
    "close-mid-body": lambda proxy, digest: proxy.break_body("blobs", "close", after=16, match=digest, skip=2),
    "drip-1-byte-per-second": lambda proxy, digest: proxy.break_body("blobs", "drip", rate=1, match=digest,
                                                                      skip=2),
    "429": lambda proxy, digest: proxy.fail("blobs", 429, 1000, match=digest, skip=2),
    "429-retry-after-1000": lambda proxy, digest: proxy.fail("blobs", 429, 1000, {"Retry-After": "1000"},
                                                             match=digest, skip=2),
}


@pytest.mark.parametrize("fault", RANGE_FAULTS)
def test_estargz_file_ranges_that_fail_after_the_toc_hide_the_name_within_the_budget(world, mounts, tmp_path, fault):
    pair = world.pairs["estargz"]
    b_layer = pair.layer("b")["digest"]
    with FaultProxy(world.registry.host) as proxy:
        RANGE_FAULTS[fault](proxy, b_layer)  # footer and TOC pass: the two first ranges of B's layer
        # By ranges: a prefetching mount would download a layer this small whole (the gzip cases cover that).
        mnt = mounts.mount(world.ref(proxy.host, pair.repo), tmp_path / "mnt", tmp_path / "cache", *MOUNT_ARGS,
                           *ON_DEMAND)
        assert timed("read", mnt.path / a_key_file(pair))[0] == "ok"
        key = b_key(pair)
        name = kernel_dirs(pair.b_src)[key]
        result, seconds = timed("read", mnt.path / key / f"{name}.cubin")
        assert result == "ENOENT", result  # its directory's metadata cannot be read: absent for now
        assert_within_budget(seconds, f"a B file under {fault}")
        b_ranges = [r for r in proxy.seen if r.kind == "blobs" and b_layer in r.path]
        assert len(b_ranges) >= 3, "the file's range was never requested"
        assert used(mnt.status(), "b")["state"] == "loaded", "the TOC must have loaded"
        assert_a_serves(mnt.path, pair.a_src)


def test_kernels_in_the_upper_serve_while_an_image_that_may_hold_them_is_failing(world, mounts, tmp_path):
    """The overlay wins over images: what a node compiled earlier (its upper) serves during B's fault."""
    pair = world.pairs["gzip"]
    upper = tmp_path / "upper"
    first = mounts.mount(world.ref(world.registry.host, pair.repo), tmp_path / "mnt1", tmp_path / "cache1",
                         *MOUNT_ARGS, "--upper", str(upper))
    probe_json(f"""
os.makedirs({str(first.path / "NEWKEY")!r})
open({str(first.path / "NEWKEY" / "kernel.cubin")!r}, "wb").write(b"compiled here")
print("[]")""")
    first.unmount()
    with FaultProxy(world.registry.host) as proxy:
        FAULTS["stall"](proxy, pair.layer("b")["digest"])
        mnt = mounts.mount(world.ref(proxy.host, pair.repo), tmp_path / "mnt2", cache_for(world, "gzip", tmp_path),
                           *MOUNT_ARGS, "--upper", str(upper))
        assert timed("read", mnt.path / a_key_file(pair))[0] == "ok"
        assert timed("stat", mnt.path / b_key(pair))[0] == "ENOENT"
        result, seconds = timed("read", mnt.path / "NEWKEY" / "kernel.cubin")
        assert result == "ok", result
        assert_within_budget(seconds, "a read of the upper")
        assert timed("stat", mnt.path / "NOT-ANYWHERE")[0] == "ENOENT", "absent while B, which may hold it, fails"
        # What Triton does on a miss works during the fault: makedirs, then its put into the new directory.
        probe_json(f"""
os.makedirs({str(mnt.path / b_key(pair))!r}, exist_ok=True)
open({str(mnt.path / b_key(pair) / "compiled.json")!r}, "w").write("{{}}")
print("[]")""")
        assert used(mnt.status(), "b")["state"] == "failed"
        assert mnt.status()["tree"]["lookupsAbsentDuringFaults"] >= 2


# -- smaller things -----------------------------------------------------------------------------------------

def as_nobody_with_dev_fuse(world, mode: str, then: str = "") -> subprocess.CompletedProcess:
    """`mcvfs mount` run by uid 65534 in a private mount namespace whose /dev/fuse is a node of `mode` (the host's
    is left alone), then the shell commands `then` as that user; returns the shell's result."""
    unshare, setpriv = require_tool("unshare"), require_tool("setpriv")
    # pytest's own temp dirs are root's alone: the user needs a path it can reach.
    root = Path(tempfile.mkdtemp(prefix="mcvfs-nonroot-"))
    try:
        os.chmod(root, 0o755)
        device = root / "fuse"
        subprocess.run(["mknod", "-m", mode, str(device), "c", "10", "229"], check=True)
        home, mountpoint = root / "home", root / "mnt"
        for d in (home, mountpoint):
            d.mkdir()
        mcvfs = Mcvfs(home)
        subprocess.run(["chown", "-R", "65534:65534", str(home), str(mountpoint)], check=True)
        user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        mount = [*user, reachable(mcvfs.binary), "mount", "--plain-http", *MOUNT_ARGS,
                 world.ref(world.registry.host, "iso/gzip"), str(mountpoint)]
        quoted = " ".join(f"'{a}'" for a in mount)
        script = f"mount --bind {device} /dev/fuse && {quoted}"
        if then:
            script += f" && {' '.join(user)} sh -c '{then.replace('MNT', str(mountpoint))}'"
        # The user's cwd must be one it can enter too (the daemon re-runs itself there).
        return subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, env=mcvfs.env, timeout=120, stdin=subprocess.DEVNULL,
                              cwd=str(root))
    finally:
        subprocess.run(["umount", "-l", str(root / "mnt")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_a_non_root_mount_without_access_to_dev_fuse_says_what_to_do(world):
    """/dev/fuse replaced by a node only root may open (as on a host without the fuse3 package's udev rule): the
    mount must say what is wrong and what to do."""
    host_mode = os.stat("/dev/fuse").st_mode
    r = as_nobody_with_dev_fuse(world, "0600")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.startswith("mcvfs: error: ")]
    assert len(lines) == 1, r.stderr
    assert "/dev/fuse" in lines[0] and "Permission denied" in lines[0] and "0666" in lines[0], lines[0]
    assert os.stat("/dev/fuse").st_mode == host_mode, "the host's /dev/fuse must be left as it was"


def test_a_non_root_user_mounts_through_fusermount3(world):
    """With /dev/fuse open to everyone (the fuse3 package's default), a user mounts without root: the kernel's
    mount API needs CAP_SYS_ADMIN, so the mount goes through libfuse's setuid fusermount3, and serves."""
    kernel = a_key_file(world.pairs["gzip"])
    r = as_nobody_with_dev_fuse(world, "0666", f"cat MNT/{kernel} >/dev/null && echo served && fusermount3 -u MNT "
                                               "&& echo unmounted")
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.splitlines()[-2:] == ["served", "unmounted"], (r.stdout, r.stderr)
