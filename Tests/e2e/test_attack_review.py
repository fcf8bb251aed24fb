"""Attacks an independent review of the issue-21 defences found, each held now (each of these tests failed
before its fix; docs/security.md names them):

- A user of a mount (any uid, nothing but the mount) tries to make the root daemon write a sparse file's whole
  apparent size to disk in one FUSE request: truncate a file of their own to a large size, then open it to write.
- A holder of an accepted node key tries to replace the bytes of a KEY another node's image provides in the image
  that `compact --sign-key` signs, by re-pushing until its manifest digest sorts first: the KEY is left out, and a
  KEY an earlier compaction holds keeps that compaction's bytes.
- One stat of a crafted `vllm_compile_cache.py` (under the 1 MiB relocation bound) must cost the daemon little CPU.
- One stat of a group file (under the bound) in a deep directory must cost the daemon bounded memory.
- A registry writer without a key overwrites an image's `.sig` tag with 64 layers naming one 16 MiB blob: verifying
  it, and signing (appending to that tag), must hold bounded memory.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from support.fleet import key_pair
from support.images import RegistryAPI
from support.mcvfs import Mcvfs
from support.mounts import daemon_pids, kernel_dirs, probe_json
from support.registry import Registry
from test_hostile_node import image, kernel_dir, world  # noqa: F401 (fixtures)
from test_precedence import ENV, FIXTURE, REPO, Attack, attack, read  # noqa: F401 (a fixture)

NOBODY = 65534
SPARSE = 1 << 30


def test_opening_a_sparse_upper_file_for_writing_never_makes_root_write_its_whole_size(image, world, mounts):
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90")
    key = kernel_dir(mnt.path)
    target = key / "big.bin"
    # Through the mount only: a file of one byte, truncated to 1 GiB (sparse: ftruncate), then opened r+.
    probe_json(f"""
with open({str(target)!r}, "wb") as f:
    f.write(b"x")
os.truncate({str(target)!r}, {SPARSE})
open({str(target)!r}, "r+b").close()
print(json.dumps(os.stat({str(target)!r}).st_size))""", user=NOBODY)
    (on_disk,) = (world / "cache" / "upper").glob(f"*/{NOBODY}/{key.name}/big.bin")
    allocated = on_disk.stat().st_blocks * 512
    assert allocated < SPARSE // 2, f"one open made the daemon write {allocated} bytes for a 1-byte file"


@pytest.fixture
def nodes(tmp_path):
    """A repository with no base image: two nodes publish fleet images (each its own key), CI compacts them."""
    with Registry(tmp_path / "registry") as registry:
        fleet = Attack.__new__(Attack)  # Attack's helpers, without its CI-signed base image
        fleet.root, fleet.registry = tmp_path, registry
        fleet.api = RegistryAPI(registry.host)
        fleet.mcvfs = Mcvfs(tmp_path / "home")
        fleet.ci_key, fleet.ci_pub = key_pair(fleet.mcvfs, tmp_path / "ci")
        fleet.node_key, fleet.node_pub = key_pair(fleet.mcvfs, tmp_path / "node")
        fleet.key = sorted(kernel_dirs(FIXTURE))[0]
        fleet.cubin = f"{kernel_dirs(FIXTURE)[fleet.key]}.cubin"
        yield fleet


def test_a_node_key_cannot_make_compaction_sign_other_bytes_for_a_key_another_node_provides(nodes, mounts, tmp_path):
    honest_key, honest_pub = key_pair(nodes.mcvfs, tmp_path / "honest")
    attacker_key = nodes.node_key
    # An honest node published the fixture's KEY; nothing else provides it.
    honest = tmp_path / "honest-src"
    shutil.copytree(FIXTURE / nodes.key, honest / nodes.key)
    nodes.node_key = honest_key
    honest_tag = nodes.push_fleet(honest)
    nodes.node_key = attacker_key
    # The attacker (another node's accepted key): the same KEY with other bytes (and a KEY of its own), re-pushed
    # with a changed byte until its manifest digest sorts before the honest image's.
    evil_tag = None
    for attempt in range(40):
        evil, own_key = nodes.evil_source(f"evil{attempt}")
        tag = nodes.push_fleet(evil)
        if tag.rsplit("-", 1)[1] < honest_tag.rsplit("-", 1)[1]:
            evil_tag = tag
            break
    assert evil_tag, "no digest sorted first in 40 pushes"
    # CI, as docs/fleet.md's strict recipe runs it: merges only node-signed images, signs the result.
    def compact():
        return nodes.mcvfs.run("compact", "--plain-http", "--cache-dir", str(tmp_path / "ci-cache"), "--key",
                               str(honest_pub), "--key", str(nodes.node_pub), "--sign-key", str(nodes.ci_key),
                               "--keep-for", "1h", nodes.ref(), env=ENV, timeout=300)
    r = compact()
    assert r.rc == 0, r
    # Two node images disagree on a KEY, and nothing orders them that a publisher could not choose: the compaction
    # holds neither copy (consumers compile the KEY), and says so.
    assert f"KEY {nodes.key}: withheld, {evil_tag} and {honest_tag} rank alike" in r.stdout, r
    assert f"KEY {nodes.key}: withheld" in r.stderr, r
    # A consumer that trusts only CI's signature serves the compaction.
    mnt = mounts.mount(nodes.ref(), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--key",
                       str(nodes.ci_pub))
    used = sorted(u["name"] for u in mnt.status()["used"])
    served = read(mnt.path / nodes.key / nodes.cubin)
    assert served != (evil / nodes.key / nodes.cubin).read_bytes(), (
        f"the CI-signed compaction {used} serves {evil_tag}'s bytes for KEY {nodes.key}, which {honest_tag} "
        f"provides; compact said: {r.stdout[-1500:]} {r.stderr[-1500:]}")
    assert served == "ENOENT", f"{used} serves {served!r} for a KEY its sources disagree on"
    assert (mnt.path / own_key).is_dir(), "a node image's own KEYs are merged"
    # The next run makes no other compaction: the disputed KEY waits for an operator, not for the next push.
    again = compact()
    assert again.rc == 0 and not [line for line in again.stdout.splitlines() if line.startswith("sha256:")], again


def test_a_key_an_earlier_compaction_holds_keeps_its_bytes_whatever_a_node_key_pushes_later(nodes, mounts, tmp_path):
    honest_key, honest_pub = key_pair(nodes.mcvfs, tmp_path / "honest")
    attacker_key = nodes.node_key
    # Two honest images (the fixture's KEY, and another), compacted and signed by CI.
    honest = tmp_path / "honest-src"
    shutil.copytree(FIXTURE / nodes.key, honest / nodes.key)
    nodes.node_key = honest_key
    nodes.push_fleet(honest)
    more = tmp_path / "honest-more"
    other_key = sorted(kernel_dirs(FIXTURE))[1]
    shutil.copytree(FIXTURE / other_key, more / other_key)
    nodes.push_fleet(more)
    nodes.node_key = attacker_key

    def compact():
        r = nodes.mcvfs.run("compact", "--plain-http", "--cache-dir", str(tmp_path / "ci-cache"), "--key",
                            str(honest_pub), "--key", str(nodes.node_pub), "--sign-key", str(nodes.ci_key),
                            "--keep-for", "1h", "--json", nodes.ref(), env=ENV, timeout=300)
        (compacted,) = r.json()["compacted"]
        return r, compacted
    _, compacted = compact()
    first = compacted["image"]["tag"]
    assert compacted["keyConflicts"] == 0 and compacted["conflicts"] == [], compacted
    # Then the attacker publishes other bytes for that KEY, with a KEY of its own so that compaction runs again.
    evil, own_key = nodes.evil_source("evil")
    evil_tag = nodes.push_fleet(evil)
    r, compacted = compact()
    second = compacted["image"]["tag"]
    assert compacted["conflicts"] == [{"key": nodes.key, "served": first, "other": evil_tag}], compacted
    assert compacted["keyConflicts"] == 1
    assert f"KEY {nodes.key}: served from {first}, other bytes in {evil_tag}" in r.stderr, r
    # A consumer that trusts only CI's signature: both compactions hold the first one's bytes.
    mnt = mounts.mount(nodes.ref(), tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--key",
                       str(nodes.ci_pub))
    assert {u["name"] for u in mnt.status()["used"]} == {first, second}
    assert read(mnt.path / nodes.key / nodes.cubin) == nodes.base_bytes()
    assert (mnt.path / own_key).is_dir()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_one_stat_of_a_compile_index_in_an_upper_costs_the_daemon_little_cpu(image, world, mounts):
    """`vllm_compile_cache.py` under the 1 MiB relocation bound is rewritten by a backtracking regex on every getattr:
    lines of `'/torch_compile_cache/torch_compile_cache/...` closed by the other quote take O(n^2) steps each."""
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90")
    key = kernel_dir(mnt.path)
    target = key / "vllm_compile_cache.py"
    line = "'/" + "torch_compile_cache/" * 2000 + '"\n'
    probe_json(f"""
with open({str(target)!r}, "w") as f:
    f.write({line!r} * 10)
print(json.dumps(True))""", user=NOBODY, timeout=600)
    (pid,) = daemon_pids(mnt.path)
    before = cpu_seconds(pid)
    probe_json(f"print(json.dumps(os.stat({str(target)!r}).st_size))", user=NOBODY, timeout=600)
    spent = cpu_seconds(pid) - before
    assert spent < 2, f"one stat of a {len(line) * 10}-byte file cost the daemon {spent:.1f} s of CPU"


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_a_group_file_under_the_relocation_bound_costs_the_daemon_bounded_memory(image, world, mounts):
    """A group file is relocated when it holds at most 1 MiB, but its output is not bounded: each child path becomes
    `<root>/<directory>/<name>`, and the directory is as long as the user nests it (beyond PATH_MAX, one level at a
    time). 40 000 children of 20 bytes under a 4 KiB directory: ~170 MB out of 0.8 MB in, on every getattr."""
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90")
    probe_json(f"""
fd = os.open({str(mnt.path)!r}, os.O_DIRECTORY)
for name in ["d" * 200] * 20 + ["K"]:
    os.mkdir(name, dir_fd=fd)
    fd = os.open(name, os.O_DIRECTORY, dir_fd=fd)
group = os.open("__grp__x.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(group, json.dumps({{"child_paths": {{f"c{{i}}": f"/K/c{{i}}" for i in range(40000)}}}}).encode())
os.close(group)
print(json.dumps(True))""", user=NOBODY, timeout=600)
    before = vm_hwm(mnt.pid)
    size = probe_json(f"""
fd = os.open({str(mnt.path)!r}, os.O_DIRECTORY)
for name in ["d" * 200] * 20 + ["K"]:
    fd = os.open(name, os.O_DIRECTORY, dir_fd=fd)
print(json.dumps(os.stat("__grp__x.json", dir_fd=fd).st_size))""", user=NOBODY, timeout=600)
    grown = vm_hwm(mnt.pid) - before
    assert grown < 100 << 20, f"stat of a <1 MiB group file (served as {size} bytes) grew the daemon by {grown >> 20} MiB"


def overwrite_signature_tag(attack: Attack) -> None:
    """What anyone with push rights can do to any image: its `sha256-<hex>.sig` becomes 64 simple-signing layers
    naming one 16 MiB blob."""
    digest = attack.api.get_manifest(REPO, "cuda-sm90")[2]
    blob = os.urandom(1024) * (16 * 1024 - 1)
    blob_digest = attack.api.push_blob(REPO, blob)
    config = attack.api.push_blob(REPO, b"{}")
    layer = {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": blob_digest,
             "size": len(blob), "annotations": {"dev.cosignproject.cosign/signature": "AAAA"}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                "layers": [layer] * 64}
    attack.api.push_manifest(REPO, digest.replace(":", "-") + ".sig", json.dumps(manifest).encode(),
                             "application/vnd.oci.image.manifest.v1+json")


def test_a_keyless_writers_signature_tag_costs_a_verifier_bounded_memory(attack, mounts, tmp_path):
    """Anyone with push rights can overwrite `sha256-<hex>.sig` of any image: 64 simple-signing layers (256 are
    read) naming one 16 MiB blob are each fetched and kept whole, on every mount's verification and refresh."""
    overwrite_signature_tag(attack)
    verify = subprocess.run([str(attack.mcvfs.binary), "verify", "--plain-http", "--key", str(attack.ci_pub),
                             attack.ref("cuda-sm90")], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HOME": str(tmp_path / "home")})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak < 300 << 20, f"verify (rc {verify.returncode}) peaked at {peak >> 20} MiB: {verify.stderr[-500:]}"


def test_a_keyless_writers_signature_tag_costs_a_signer_bounded_memory(attack, tmp_path):
    """A signer (publish, compact, the daemon's periodic publish) appends to the `.sig` image it finds: it keeps
    every layer there, and reads none of their blobs."""
    overwrite_signature_tag(attack)
    sign = subprocess.run([str(attack.mcvfs.binary), "sign", "--plain-http", "--key", str(attack.node_key),
                           attack.ref("cuda-sm90")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **ENV, "HOME": str(tmp_path / "home")})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert sign.returncode == 0, sign.stderr[-500:]
    assert peak < 300 << 20, f"sign peaked at {peak >> 20} MiB"
    digest = attack.api.get_manifest(REPO, "cuda-sm90")[2]
    layers = json.loads(attack.api.get_manifest(REPO, digest.replace(":", "-") + ".sig")[0])["layers"]
    assert len(layers) == 65, "the signature is appended, the layers already there kept"
