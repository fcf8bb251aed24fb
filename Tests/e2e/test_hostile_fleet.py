"""The fleet loop against the attackers docs/security.md names (issue 21): a registry writer without a key, and a
user of a mount who writes odd names, huge files and links into an upper. Real registry, real mounts, real
Triton. Each test attacks one defence and asserts what the attacker gets: nothing, with a reason that says why.

- An unsigned `fleet-*` image (what anyone with push rights can make) is never merged by a compaction that
  signs, and never served by a --key mount; neither is an earlier unsigned compaction. `compact --sign-key`
  without a signature policy is refused, naming the fix.
- A group file naming `x.cubin<NUL>y`, a name with control characters (in a group file and in the upper) refuse
  their own entries only: the other kernels publish.
- A 4 GiB sparse file in an upper is refused without being read (publish's peak RSS is measured).
- A publish that fails leaves no staging directory.
- push, convert and publish each write a Sigstore bundle referrer and a legacy `.sig` that verify.
- A mount that refreshes with no signature policy says so: stderr, status, metrics."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from support.cosign_format import bundle_referrers, py_check, py_check_bundle, sig_tag
from support.fleet import FIXTURE, PASSWORD, REPO, Fleet, fleet, key_pair, published_tag, pushed  # noqa: F401
from support.net import free_port
from support.registry import require_tool
from support.metrics import metric

ENV = {"COSIGN_PASSWORD": PASSWORD}


def cli(fleet: Fleet, *args: str):
    """mcvfs with the keys' password, as a CI job runs it."""
    return fleet.mcvfs.run(*args, env=ENV, timeout=300)


def compact(fleet: Fleet, *args: str):
    return fleet.mcvfs.run("compact", "--plain-http", "--cache-dir", str(fleet.root / "ci-cache"), *args,
                           env=ENV, timeout=300)


def labels(fleet: Fleet, tag: str) -> dict[str, str]:
    info = json.loads(subprocess.run(
        [require_tool("skopeo"), "inspect", "--tls-verify=false", f"docker://{fleet.repo}:{tag}"],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    return info["Labels"]


def upper_of(node) -> Path:
    (upper,) = (node.cache / "upper").glob("*/0")
    return upper


def group_file(entry: Path) -> Path:
    (group,) = entry.glob("__grp__*.json")
    return group


def name_in_group(entry: Path, name: str) -> None:
    """Adds `name` to the entry's group file, as a user who writes the upper can."""
    group = group_file(entry)
    document = json.loads(group.read_text())
    document["child_paths"][name] = f"/root/.triton/cache/{entry.name}/{name}"
    group.write_text(json.dumps(document))


def signed_both_ways(fleet: Fleet, repo: str, digest: str, public: Path) -> None:
    api = fleet.api()
    pem = public.read_bytes()
    assert sig_tag(digest) in api.tags(repo), "a legacy .sig image"
    assert py_check(api, repo, digest, pem), "whose signature verifies with the key"
    assert bundle_referrers(api, repo, digest), "a Sigstore bundle referrer"
    assert py_check_bundle(api, repo, digest, pem), "whose DSSE signature verifies with the key"
    r = fleet.run("verify", "--plain-http", "--key", str(public), f"{fleet.registry.host}/{repo}@{digest}")
    assert r.rc == 0, str(r)


def test_compact_sign_key_without_a_policy_is_refused_naming_the_fix(fleet: Fleet):
    ci_key, _ = key_pair(fleet.mcvfs, fleet.root / "ci-key", PASSWORD)
    before = fleet.fleet_tags()
    r = compact(fleet, "--sign-key", str(ci_key), "--keep-for", "0s", fleet.repo)
    assert r.rc != 0, str(r)
    assert "--key" in r.stderr and "--policy" in r.stderr and "--sign-key" in r.stderr, r.stderr
    assert fleet.fleet_tags() == before, "nothing pushed, nothing removed"


def test_an_unsigned_fleet_image_and_an_unsigned_compaction_are_never_merged_nor_served(fleet: Fleet):
    node_key, node_pub = key_pair(fleet.mcvfs, fleet.root / "node-key", PASSWORD)
    ci_key, ci_pub = key_pair(fleet.mcvfs, fleet.root / "ci-key", PASSWORD)
    # The base image is signed by the CI key, as a pipeline that pushes caches signs them.
    r = cli(fleet, "sign", "--plain-http", "--key", str(ci_key), f"{fleet.repo}:cuda-sm90")
    assert r.rc == 0, str(r)
    a = fleet.node("a")
    a.compile([32])
    signed = published_tag(a.publish("--sign-key", str(node_key), env=ENV))
    a.compile([16])
    signed_later = published_tag(a.publish("--sign-key", str(node_key), env=ENV))
    signed_keys = a.upper_keys()
    # The attacker: push rights, no key. Its image has a well-formed fleet tag (digest and all).
    a.compile([64])
    unsigned = published_tag(a.publish())
    attacker_keys = a.upper_keys() - signed_keys
    assert len(attacker_keys) == 1
    # An earlier compaction nobody signed (run without a policy: it warns, and merges everything).
    earlier = compact(fleet, "--keep-for", "1h", fleet.repo)
    assert "no signature policy" in earlier.stderr, earlier.stderr
    unsigned_compaction = published_tag(earlier)

    r = compact(fleet, "--key", str(node_pub), "--sign-key", str(ci_key), "--keep-for", "1h", fleet.repo)
    merged = published_tag(r)
    assert f"not compacted: {fleet.repo}:{unsigned}" in r.stderr, r.stderr
    assert f"not compacted: {fleet.repo}:{unsigned_compaction}" in r.stderr, r.stderr
    assert "image(s) not compacted" in r.stderr, "a summary line"
    sources = sorted(s["tag"] for s in json.loads(labels(fleet, merged)["io.mcvfs.fleet/merged"]))
    assert sources == sorted([signed, signed_later]), sources

    # A consumer trusting the CI and node keys serves the signed kernels only.
    consumer = fleet.node("consumer", "--key", str(ci_pub), "--key", str(node_pub))
    used = {u["name"] for u in consumer.status()["used"]}
    assert {merged, signed, signed_later} <= used, used
    assert unsigned not in used and unsigned_compaction not in used, used
    served = set(os.listdir(consumer.path))
    assert signed_keys <= served, (signed_keys, served)
    assert not attacker_keys & served, "the unsigned kernel is not served"
    # Compacting again takes nothing new: its own compaction verifies with its own key.
    again = compact(fleet, "--key", str(node_pub), "--sign-key", str(ci_key), "--keep-for", "1h", fleet.repo)
    assert again.rc == 0 and not pushed(again), str(again)


def test_bad_names_in_group_files_and_uppers_refuse_their_entries_only(fleet: Fleet):
    a = fleet.node("a")
    a.compile([32, 64, 128, 256])
    upper = upper_of(a)
    nul, control, good, copied = sorted(a.upper_keys())
    # A NUL: the C call would cut `x.cubin\0y` to `x.cubin`, a file the entry already has.
    cubin = next(p.name for p in (upper / nul).iterdir() if p.name.endswith(".cubin"))
    name_in_group(upper / nul, cubin + "\x00y")
    # A control character in a file name the group names, and in the upper (the file exists).
    evil = "evil\x1b[2J.cubin"
    (upper / control / evil).write_bytes(b"\x7fELF")
    name_in_group(upper / control, evil)
    # A whole entry under a name with a control character.
    shutil.copytree(upper / copied, upper / (copied + "\x07"))
    shutil.rmtree(upper / copied)

    r = a.publish()
    (image,) = pushed(r)
    tag = image[1].rsplit(":", 1)[1]
    assert labels(fleet, tag)["cache.triton.image/entry-count"] == "1", "only the good entry"
    assert "a name with a NUL byte" in r.stderr, r.stderr
    assert "a name with a control character (evil\\u{1b}[2J.cubin)" in r.stderr, r.stderr
    assert f"{copied}\\u{{7}}: refused: a name with a control character" in r.stderr, r.stderr
    consumer = fleet.node("consumer")
    served = set(os.listdir(consumer.path))
    assert good in served and nul not in served and control not in served, served


def test_a_4gib_sparse_file_is_refused_with_bounded_publish_memory_and_the_rest_publishes(fleet: Fleet):
    a = fleet.node("a")
    a.compile([32, 64])
    upper = upper_of(a)
    huge, small = sorted(a.upper_keys())
    cubin = next(p for p in (upper / huge).iterdir() if p.name.endswith(".cubin"))
    subprocess.run(["truncate", "-s", "4G", str(cubin)], check=True)
    # Peak RSS of the publish process, as the kernel counts it (`/usr/bin/time -v`).
    argv = [require_tool("/usr/bin/time"), "-v", *fleet.mcvfs.argv(
        "publish", "--plain-http", "--cache-dir", str(a.cache), str(a.path), a.mount.ref)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env={**fleet.mcvfs.env},
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-4000:]
    peak_kib = int(next(line.split(":")[1] for line in out.stderr.splitlines()
                        if "Maximum resident set size" in line))
    print(f"publish peak RSS with a 4 GiB sparse file in the upper: {peak_kib / 1024:.1f} MiB")
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"
    assert f"refused: {cubin.name} is too large (4294967296 bytes; the limit is 268435456)" in out.stderr, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("sha256:")]
    assert len(lines) == 1, out.stdout
    consumer = fleet.node("consumer")
    served = set(os.listdir(consumer.path))
    assert small in served and huge not in served, served


def test_a_failing_publish_leaves_no_staging_directory(fleet: Fleet):
    """Staging lives under the cache's work/ (never $TMPDIR): a failed publish removes its own, and the scratch a
    publish killed mid-way left (its lock file no longer held) goes at the next publish."""
    a = fleet.node("a")
    a.compile([32])
    scratch = fleet.root / "tmp"
    scratch.mkdir()
    killed = Path(a.cache) / "work" / "1-publish-killed"
    (killed / "cache").mkdir(parents=True)
    (killed / "cache" / "kernel.cubin").write_bytes(b"x" * 4096)
    Path(f"{killed}.lock").touch()
    dead = f"127.0.0.1:{free_port()}/{REPO}"  # nothing listens: every push fails
    r = fleet.mcvfs.run("publish", "--plain-http", "--cache-dir", str(a.cache), "--timeout", "5", str(a.path), dead,
                        env={"TMPDIR": str(scratch)}, timeout=180)
    assert r.rc != 0, str(r)
    left = [p.name for p in (Path(a.cache) / "work").iterdir() if p.name != ".lock"]  # .lock orders work/ alone
    assert left == [], "its own staging and the killed publish's are gone"
    assert list(scratch.iterdir()) == [], "nothing was staged in $TMPDIR"


def test_push_convert_and_publish_each_sign_as_sign_does(fleet: Fleet):
    key, pub = key_pair(fleet.mcvfs, fleet.root / "key", PASSWORD)
    host = fleet.registry.host
    r = cli(fleet, "push", "--plain-http", "--sign-key", str(key), str(FIXTURE), f"{host}/org/pushed:v1")
    ((digest, _),) = pushed(r)
    signed_both_ways(fleet, "org/pushed", digest, pub)

    refused = cli(fleet, "convert", "--plain-http", "--sign-key", str(key), f"{host}/org/pushed:v1",
                        f"{host}/org/converted:v1")
    assert refused.rc != 0 and "--key" in refused.stderr and "--policy" in refused.stderr, str(refused)
    r = cli(fleet, "convert", "--plain-http", "--key", str(pub), "--sign-key", str(key), f"{host}/org/pushed:v1",
                  f"{host}/org/converted:v1")
    ((digest, _),) = pushed(r)
    signed_both_ways(fleet, "org/converted", digest, pub)

    a = fleet.node("a")
    a.compile([32])
    ((digest, _),) = pushed(a.publish("--sign-key", str(key), env=ENV))
    signed_both_ways(fleet, REPO, digest, pub)

    r = cli(fleet, "push", "--plain-http", "--sign-key", str(key), "--signature-format", "legacy", str(FIXTURE),
                  f"{host}/org/legacy:v1")
    ((digest, _),) = pushed(r)
    assert sig_tag(digest) in fleet.api().tags("org/legacy") and not bundle_referrers(fleet.api(), "org/legacy", digest)


def test_a_mount_that_refreshes_without_a_policy_warns_on_stderr_in_status_and_in_metrics(fleet: Fleet):
    key, pub = key_pair(fleet.mcvfs, fleet.root / "key", PASSWORD)
    r = cli(fleet, "sign", "--plain-http", "--key", str(key), f"{fleet.repo}:cuda-sm90")
    assert r.rc == 0, str(r)
    port = free_port()
    open_node = fleet.node("open", "--refresh-interval", "60", "--metrics-listen", f"127.0.0.1:{port}")
    assert "refreshes with no signature policy" in open_node.mount.result.stderr, str(open_node.mount.result)
    warning = open_node.status()["service"]["signatureWarning"]
    assert "--key" in warning and "--policy" in warning, warning
    assert metric(port, "mcvfs_signature_policy_missing") == 1
    shown = fleet.mcvfs.run("status", str(open_node.path))
    assert shown.rc == 0 and "no signature policy" in shown.stdout, str(shown)

    port = free_port()
    verified = fleet.node("verified", "--refresh-interval", "60", "--key", str(pub),
                          "--metrics-listen", f"127.0.0.1:{port}")
    assert "signature policy" not in verified.mount.result.stderr, str(verified.mount.result)
    assert verified.status()["service"].get("signatureWarning") is None
    assert metric(port, "mcvfs_signature_policy_missing") == 0
