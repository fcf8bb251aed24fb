"""Which image's file a mount serves for a KEY (issue 21 break 5, issue 23 item 1), on a real registry with real
mounts.

Precedence cannot be hijacked: images published by nodes (tags ending in 16 hex digits: `fleet-*`, compactions)
and every image a live refresh adds only add KEYs; a KEY the mount's base images provide keeps their bytes,
whatever the newcomer's tag or signature, and the other bytes are reported (status, metrics, log). Node images
of one rank (a fresh node sees every fleet image in its first batch) that disagree on a KEY withhold it: no digest,
which a publisher grinds by re-pushing, picks between them.

No waiting for images without precedence: two images `a` and `b` with disjoint KEYs, `b`'s layer stalled (headers
never come, the body stalls, or drips 1 byte/s), gzip (`a` cached) and eStargz (both lazy): `a`'s first read waits
for nothing. Those mounts use `--timeout 6`, so a read that waited for `b` would take 6 s at least (the stall is
seen after `--timeout` seconds); the bound held is half that, far from both a loaded machine's noise and a wait.
The measured figure is printed."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import requests

from support.fleet import PASSWORD, key_pair, wait_for
from support.images import RegistryAPI
from support.mcvfs import Mcvfs
from support.mounts import kernel_dirs, probe_json
from support.net import free_port
from support.proxy import FaultProxy
from support.registry import Registry
from test_estargz import replicate
from test_mount_faults import FIXTURE, a_key_file, b_key, cache_for, timed, used, world  # noqa: F401 (a fixture)

REPO = "prec/cache"
ENV = {"COSIGN_PASSWORD": PASSWORD}


# -- precedence -----------------------------------------------------------------------------------------------

class Attack:
    """A repository whose base image `cuda-sm90` (signed by CI's key) holds the fixture's kernels, and an attacker
    holding a key the mounts also accept (a node's): its images hold one of the base's KEYs with other bytes, and
    a KEY of their own."""

    def __init__(self, root: Path, registry: Registry):
        self.root = root
        self.registry = registry
        self.api = RegistryAPI(registry.host)
        self.mcvfs = Mcvfs(root / "home")
        self.ci_key, self.ci_pub = key_pair(self.mcvfs, root / "ci")
        self.node_key, self.node_pub = key_pair(self.mcvfs, root / "node")
        self.key = sorted(kernel_dirs(FIXTURE))[0]
        self.cubin = f"{kernel_dirs(FIXTURE)[self.key]}.cubin"
        self.push_signed(FIXTURE, "cuda-sm90", self.ci_key)

    def ref(self, tag: str | None = None) -> str:
        return f"{self.registry.host}/{REPO}" + (f":{tag}" if tag else "")

    def push_signed(self, src: Path, tag: str, key: Path, repo: str = REPO) -> str:
        """`mcvfs push` then `mcvfs sign`; returns the manifest digest."""
        ref = f"{self.registry.host}/{repo}:{tag}"
        r = self.mcvfs.run("push", "--plain-http", str(src), ref, timeout=300)
        assert r.rc == 0, r
        r = self.mcvfs.run("sign", "--plain-http", "--key", str(key), ref, env=ENV)
        assert r.rc == 0, r
        return self.api.get_manifest(repo, tag)[2]

    def evil_source(self, name: str) -> tuple[Path, str]:
        """The base's KEY with other bytes in its cubin, and a KEY of its own; returns (directory, new KEY)."""
        src = self.root / name
        shutil.copytree(FIXTURE / self.key, src / self.key)
        cubin = src / self.key / self.cubin
        cubin.write_bytes(cubin.read_bytes() + f"\n// {name} was here\n".encode())
        extra = replicate(FIXTURE, self.root / f"{name}-extra", 1)
        new_key = sorted(kernel_dirs(extra))[0]
        shutil.copytree(extra / new_key, src / new_key)
        return src, new_key

    def push_fleet(self, src: Path, prefix: str = "fleet") -> str:
        """`src` signed by the node key under a content-derived tag, as `publish --tag-prefix PREFIX` names it."""
        digest = self.push_signed(src, "scratch", self.node_key, repo="prec/scratch")
        body, media_type, _ = self.api.get_manifest("prec/scratch", digest)
        manifest = json.loads(body)
        for blob in [manifest["config"], *manifest["layers"]]:
            self.api.push_blob(REPO, self.api.get_blob("prec/scratch", blob["digest"]))
        tag = f"{prefix}-cuda-sm90-{digest.removeprefix('sha256:')[:16]}"
        self.api.push_manifest(REPO, tag, body, media_type)
        r = self.mcvfs.run("sign", "--plain-http", "--key", str(self.node_key), self.ref(tag), env=ENV)
        assert r.rc == 0, r
        return tag

    def base_bytes(self) -> bytes:
        return (FIXTURE / self.key / self.cubin).read_bytes()


@pytest.fixture
def attack(tmp_path) -> Attack:
    with Registry(tmp_path / "registry") as registry:
        yield Attack(tmp_path, registry)


def read(path: Path) -> bytes | str:
    """The file's bytes as a fresh process reads them (the errno name when it cannot)."""
    code = f"""
import base64
try:
    print(json.dumps({{"bytes": base64.b64encode(open({str(path)!r}, 'rb').read()).decode()}}))
except OSError as e:
    print(json.dumps({{"errno": errno.errorcode.get(e.errno, str(e.errno))}}))
"""
    value = probe_json(code)
    return base64.b64decode(value["bytes"]) if "bytes" in value else value["errno"]


def mount_args(attack: Attack, *extra: str) -> tuple[str, ...]:
    return ("--gpu", "cuda:90", "--key", str(attack.ci_pub), "--key", str(attack.node_pub), *extra)


def conflicts(status: dict) -> list[dict]:
    return status.get("tree", {}).get("conflicts") or []


def test_a_fleet_image_signed_by_an_accepted_key_adds_keys_but_never_changes_one_on_a_fresh_mount(attack, mounts,
                                                                                                   tmp_path):
    evil, new_key = attack.evil_source("fleet-evil")
    # The node chose a tag prefix that sorts before every base tag (`publish --tag-prefix 0`).
    tag = attack.push_fleet(evil, prefix="0")
    port = free_port()
    mnt = mounts.mount(attack.ref(), tmp_path / "mnt", tmp_path / "cache",
                       *mount_args(attack, "--metrics-listen", f"127.0.0.1:{port}"))
    status = mnt.status()
    assert {u["name"] for u in status["used"]} == {"cuda-sm90", tag}, status["used"]
    assert read(mnt.path / attack.key / attack.cubin) == attack.base_bytes()
    assert (mnt.path / new_key).is_dir(), "a node image adds the KEYs nobody else provides"

    found = wait_for(lambda: conflicts(mnt.status()), guard=60, what="the conflict in status")
    assert found == [{"key": attack.key, "served": "cuda-sm90", "other": tag}], found
    assert mnt.status()["tree"]["keyConflicts"] == 1
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert "mcvfs_key_conflicts_total 1" in text, text
    assert f"KEY {attack.key}: served from cuda-sm90, other bytes in {tag}" in mnt.daemon_log()


def test_new_tags_a_refresh_finds_add_keys_but_never_change_one_not_even_tag_0(attack, mounts, tmp_path):
    mnt = mounts.mount(attack.ref(), tmp_path / "mnt", tmp_path / "cache",
                       *mount_args(attack, "--refresh-interval", "1"))
    # Nothing of the KEY is looked up before the refresh: the KEY is resolved only once the new images are in.
    assert read(mnt.path / "NOKEY") == "ENOENT"
    zero, zero_key = attack.evil_source("zero")
    attack.push_signed(zero, "0", attack.node_key)
    fleet, fleet_key = attack.evil_source("fleet")
    fleet_tag = attack.push_fleet(fleet)
    wait_for(lambda: {"0", fleet_tag} <= {u["name"] for u in mnt.status()["used"]}, guard=60,
             what="the refresh to add 0 and the fleet image")
    wait_for(lambda: all(u["state"] == "loaded" for u in mnt.status()["used"]), guard=60, what="the loads")

    assert read(mnt.path / attack.key / attack.cubin) == attack.base_bytes()
    assert (mnt.path / zero_key).is_dir() and (mnt.path / fleet_key).is_dir()
    found = wait_for(lambda: len(conflicts(mnt.status())) == 2 and conflicts(mnt.status()), guard=60,
                     what="both conflicts in status")
    assert sorted((c["served"], c["other"]) for c in found) == sorted(
        [("cuda-sm90", "0"), ("cuda-sm90", fleet_tag)]), found
    precedence = {u["name"]: u.get("precedence") for u in mnt.status()["used"]}
    assert precedence["cuda-sm90"] == "base #0" and precedence["0"].startswith("added (batch 1"), precedence


def test_a_tag_0_pushed_while_a_node_was_away_adds_keys_but_never_changes_one_on_its_remount(attack, mounts,
                                                                                             tmp_path):
    cache = tmp_path / "cache"
    mnt = mounts.mount(attack.ref(), tmp_path / "mnt", cache, *mount_args(attack))
    assert read(mnt.path / attack.key / attack.cubin) == attack.base_bytes()
    mnt.unmount()
    zero, zero_key = attack.evil_source("zero")
    attack.push_signed(zero, "0", attack.node_key)
    # The node's remount (a restarted daemon, a new pod): "0" sorts first, and this node never used it.
    again = mounts.mount(attack.ref(), tmp_path / "mnt2", cache, *mount_args(attack))
    assert read(again.path / attack.key / attack.cubin) == attack.base_bytes()
    assert (again.path / zero_key).is_dir()
    precedence = {u["name"]: u.get("precedence") for u in again.status()["used"]}
    assert precedence["cuda-sm90"] == "base #1" and precedence["0"].startswith("added (batch 1"), precedence
    found = wait_for(lambda: conflicts(again.status()), guard=60, what="the conflict in status")
    assert found == [{"key": attack.key, "served": "cuda-sm90", "other": "0"}], found
    # And the next remount still knows which came first.
    again.unmount()
    third = mounts.mount(attack.ref(), tmp_path / "mnt3", cache, *mount_args(attack))
    assert read(third.path / attack.key / attack.cubin) == attack.base_bytes()


def test_two_node_images_of_one_batch_with_other_bytes_for_a_key_withhold_it_on_a_fresh_node(attack, mounts,
                                                                                          tmp_path):
    """Nothing but a digest (which a publisher grinds by re-pushing) would order two node images a fresh node sees
    together: a KEY they disagree on is absent (the workload compiles it), and reported; a KEY both hold with the
    same bytes is served."""
    kernels = replicate(FIXTURE, tmp_path / "kernels", 1)
    disputed, agreed = sorted(kernels_of(kernels))[:2]
    honest, evil = tmp_path / "honest", tmp_path / "evil"
    for src in (honest, evil):
        for key in (disputed, agreed):
            shutil.copytree(kernels / key, src / key)
    cubin = evil / disputed / kernels_of(kernels)[disputed]
    cubin.write_bytes(cubin.read_bytes() + b"\n// other bytes\n")
    tags = sorted([attack.push_fleet(honest), attack.push_fleet(evil)], key=lambda t: t.rsplit("-", 1)[1])
    port = free_port()
    mnt = mounts.mount(attack.ref(), tmp_path / "mnt", tmp_path / "cache",
                       *mount_args(attack, "--metrics-listen", f"127.0.0.1:{port}"))
    assert {u["name"] for u in mnt.status()["used"]} == {"cuda-sm90", *tags}

    assert read(mnt.path / disputed / kernels_of(kernels)[disputed]) == "ENOENT"
    assert not (mnt.path / disputed).exists()
    assert read(mnt.path / agreed / kernels_of(kernels)[agreed]) == (
        kernels / agreed / kernels_of(kernels)[agreed]).read_bytes()
    assert read(mnt.path / attack.key / attack.cubin) == attack.base_bytes(), "the base image's KEYs are its own"

    found = wait_for(lambda: conflicts(mnt.status()), guard=60, what="the conflict in status")
    assert found == [{"key": disputed, "peer": tags[0], "other": tags[1]}], found
    assert mnt.status()["tree"]["keyConflicts"] == 1
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert "mcvfs_key_conflicts_total 1" in text, text
    assert f"KEY {disputed}: withheld, {tags[0]} and {tags[1]} rank alike" in mnt.daemon_log()


def kernels_of(cache: Path) -> dict[str, str]:
    """KEY -> the file name of its cubin."""
    return {key: f"{name}.cubin" for key, name in kernel_dirs(cache).items()}


# -- no waiting for an image without precedence ----------------------------------------------------------------

STALL_TIMEOUT = 6
STALL_ARGS = ("--gpu", "cuda:90", "--timeout", str(STALL_TIMEOUT), "--retry-delay", "30")
STALLS = {
    "headers-never-come": lambda proxy, digest: proxy.stall("blobs", match=digest),
    "body-stalls": lambda proxy, digest: proxy.break_body("blobs", "stall", after=16, match=digest),
    "drip-1-byte-per-second": lambda proxy, digest: proxy.break_body("blobs", "drip", rate=1, match=digest),
}


@pytest.mark.parametrize("stall", STALLS)
@pytest.mark.parametrize("fmt", ["gzip", "estargz"])
def test_the_image_with_precedence_serves_without_waiting_for_a_stalled_sibling(world, mounts, tmp_path, fmt,
                                                                                stall):
    pair = world.pairs[fmt]
    b_layer = pair.layer("b")["digest"]
    with FaultProxy(world.registry.host) as proxy:
        STALLS[stall](proxy, b_layer)
        mnt = mounts.mount(f"{proxy.host}/{pair.repo}", tmp_path / "mnt", cache_for(world, fmt, tmp_path),
                           *STALL_ARGS)
        result, seconds = timed("read", mnt.path / a_key_file(pair))
        print(f"\n{fmt} {stall}: a's first read took {seconds:.3f} s")
        assert result == "ok", (result, mnt.daemon_log())
        assert seconds < STALL_TIMEOUT / 2, f"a's first read took {seconds:.1f} s: it waited for b"
        assert used(mnt.status(), "b")["state"] == "loading", "b's stall had not ended: a waited for nothing"

        # b's own KEY is absent once its stall fails the load, within the budget.
        start = time.monotonic()
        result, _ = timed("stat", mnt.path / b_key(pair))
        assert result == "ENOENT", result
        assert time.monotonic() - start < 2 * STALL_TIMEOUT + 1 + 10, "b's KEY took longer than its budget"
        assert any(b_layer in r.path for r in proxy.seen if r.kind == "blobs"), "the fault was never exercised"
        assert hashlib.sha256(read(mnt.path / a_key_file(pair))).hexdigest() == hashlib.sha256(
            (pair.a_src / a_key_file(pair)).read_bytes()).hexdigest()
