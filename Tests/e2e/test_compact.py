"""`mcvfs compact` (issue 16) on a real registry with deletion enabled: published images merged into one per target
while a mount that pinned them keeps serving; their tags removed once the compaction is --keep-for old, the
registry's garbage collection taking their layers, and every kernel still reading correctly on the mount, from
its cache or from the compaction's layer. And the stricter recipe: nodes publish signed to a staging repository,
a CI job compacts it into the repository consumers mount, signed with its own key."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time

import requests

from support.fleet import PASSWORD, REPO, Fleet, fleet, key_pair, published_tag  # noqa: F401 (fleet: a fixture)
from support.mounts import ON_DEMAND, probe_json
from support.registry import require_tool



def digests_on(node, keys) -> dict[str, str]:
    """sha256 of every file of `keys` as the node's mount serves them, read in a fresh process."""
    return probe_json(f"""
import hashlib
root = {str(node.path)!r}
out = {{}}
for key in {sorted(keys)!r}:
    for name in sorted(os.listdir(os.path.join(root, key))):
        if not name.startswith("__grp__"):
            out[key + "/" + name] = hashlib.sha256(open(os.path.join(root, key, name), "rb").read()).hexdigest()
print(json.dumps(out))""")


def compact(fleet: Fleet, *args: str, env: dict | None = None):
    return fleet.mcvfs.run("compact", "--plain-http", "--cache-dir", str(fleet.root / "ci-cache"), *args, env=env)


def test_compaction_with_tag_removal_while_a_mount_serves_loses_no_kernel(fleet: Fleet):
    # B reads only what its readers open (no prefetch), so it still lacks kernels when the tags go away.
    b = fleet.node("b", "--refresh-interval", "1", *ON_DEMAND)
    a = fleet.node("a")
    a.compile([32])
    first = published_tag(a.publish())
    a.compile([64, 128])
    second = published_tag(a.publish())
    keys = a.upper_keys()
    upper = next((a.cache / "upper").glob("*/0"))
    expected = {f"{k}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
                for k in keys for f in (upper / k).iterdir() if not f.name.startswith("__grp__")}
    b.wait_refreshed_with(second)
    b.wait_refreshed_with(first)
    # B serves the first image's kernel now (fetched, in its cache); the second image's it has not read yet.
    lines, summary = b.compile([32])
    assert summary == {"kernels": 1, "hits": 1}, lines

    r = compact(fleet, "--keep-for", "3s", fleet.repo)
    merged = published_tag(r)
    assert merged.startswith("fleet-cuda-sm90-") and merged not in (first, second)
    assert set(fleet.fleet_tags()) == {first, second, merged}, "merged tags stay for --keep-for"
    info = json.loads(subprocess.run(
        [require_tool("skopeo"), "inspect", "--tls-verify=false", f"docker://{fleet.repo}:{merged}"],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    labels = info["Labels"]
    assert labels["cache.triton.image/entry-count"] == "3", "deduplicated by <KEY>, labels recomputed"
    assert sorted(s["tag"] for s in json.loads(labels["io.mcvfs.fleet/merged"])) == sorted([first, second])
    again = compact(fleet, "--keep-for", "3s", fleet.repo)
    assert again.rc == 0 and not [l for l in again.stdout.splitlines() if l.startswith("sha256:")], \
        "nothing new to merge: no new image"
    b.wait_refreshed_with(merged)

    time.sleep(3.5)
    removed = compact(fleet, "--keep-for", "3s", fleet.repo)
    assert removed.rc == 0, str(removed)
    assert sorted(l.split()[1] for l in removed.stdout.splitlines() if l.startswith("removed ")) == sorted(
        [f"{fleet.repo}:{first}", f"{fleet.repo}:{second}"]), str(removed)
    assert fleet.fleet_tags() == [merged]

    # The registry's garbage collection takes what nothing names any more: the published images' layers.
    gc = subprocess.run([require_tool("docker-registry"), "garbage-collect", str(fleet.registry.config_path)],
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    status = b.status()
    gone_layers = [layer for u in status["used"] if u["name"] in (first, second) for layer in u["layers"]]
    assert gone_layers and all(
        requests.get(f"{fleet.registry.url}/v2/{REPO}/blobs/{layer}", timeout=30).status_code == 404
        for layer in gone_layers), "the removed images' layers are gone from the registry"

    # Every kernel still reads correctly on B: its cache, and the compaction's layer for what it had not read.
    mark = fleet.registry.mark()
    assert digests_on(b, keys) == expected
    merged_layers = [layer for u in status["used"] if u["name"] == merged for layer in u["layers"]]
    reads = fleet.registry.requests_since(mark)
    assert any(r.status == 404 and any(l in r.uri for l in gone_layers) for r in reads), reads
    assert any(r.status == 206 and any(l in r.uri for l in merged_layers) for r in reads), reads
    lines, summary = b.compile([32, 64, 128])
    assert summary == {"kernels": 3, "hits": 3}, lines
    assert b.upper_keys() == set()
    errors = b.status()["service"]["fuseErrors"]
    assert not any(k.endswith("/EIO") for k in errors), errors
    # A node mounting now sees only the compaction, and hits every kernel.
    d = fleet.node("d")
    assert [u["name"] for u in d.status()["used"]] == ["cuda-sm90", merged]
    lines, summary = d.compile([32, 64, 128])
    assert summary == {"kernels": 3, "hits": 3}, lines


def test_nodes_publish_to_staging_and_ci_compacts_signed_into_the_repository_consumers_mount(fleet: Fleet):
    node_key, node_pub = key_pair(fleet.mcvfs, fleet.root / "node-key", PASSWORD)
    ci_key, ci_pub = key_pair(fleet.mcvfs, fleet.root / "ci-key", PASSWORD)
    env = {"COSIGN_PASSWORD": PASSWORD}
    staging = f"{fleet.registry.host}/fleet/staging"
    consumer = fleet.node("consumer", "--refresh-interval", "1", "--key", str(ci_pub))
    a = fleet.node("a")
    a.compile([32])
    signed = published_tag(a.publish("--sign-key", str(node_key), to=staging, env=env))
    a.compile([64])
    unsigned = published_tag(a.publish(to=staging))

    r = compact(fleet, "--to", fleet.repo, "--key", str(node_pub), "--sign-key", str(ci_key), "--keep-for", "0s",
                staging, env=env)
    promoted = published_tag(r)
    assert f"not compacted: {staging}:{unsigned}" in r.stderr, "the CI job merges only what the node key signed"
    consumer.wait_refreshed_with(promoted)
    used = {u["name"]: u for u in consumer.status()["used"]}
    assert used[promoted]["signedBy"], used
    lines, summary = consumer.compile([32])
    assert summary == {"kernels": 1, "hits": 1}, lines
    # The staging tag it promoted goes (at --keep-for 0), the one it refused stays.
    staged = set(fleet.api().tags("fleet/staging"))
    assert signed not in staged and unsigned in staged, staged


# A C++ kernel's DWARF producer string, as GCC records it in the `.so` Inductor builds: it names the target
# (`cpu:avx512`), so the synthetic images below have the one target a fleet image must have.
AVX512_SO = b"\x7fELF\0GNU C++17 13.2.0 -march=native -mavx512f -mavx512dq -mavx512vl -mavx512bw -O3\0"


def write_aot_hash(node, digest_hex: str, artifact: bytes) -> dict[str, bytes]:
    """A complete vLLM AOT hash directory written through the node's mount (its `model` last, as vLLM does)."""
    relative = f"torch_compile_cache/torch_aot_compile/{digest_hex}"
    files = {f"{relative}/inductor_cache/ab/cab.so": AVX512_SO, f"{relative}/rank_0_0/model": artifact}
    for path, data in files.items():
        (node.path / path).parent.mkdir(parents=True, exist_ok=True)
        (node.path / path).write_bytes(data)
    return files


def test_vllm_images_of_one_target_are_compacted_signed_and_their_tags_removed(fleet: Fleet):
    node_key, node_pub = key_pair(fleet.mcvfs, fleet.root / "node-key", PASSWORD)
    ci_key, ci_pub = key_pair(fleet.mcvfs, fleet.root / "ci-key", PASSWORD)
    env = {"COSIGN_PASSWORD": PASSWORD}
    consumer = fleet.node("consumer", "--refresh-interval", "1", "--key", str(ci_pub), gpu="all")
    a = fleet.node("a", gpu="all")
    first_hash, second_hash = "a1" * 32, "b2" * 32
    files = write_aot_hash(a, first_hash, b"first artifact")
    first = published_tag(a.publish("--sign-key", str(node_key), env=env))
    files |= write_aot_hash(a, second_hash, b"second artifact")
    second = published_tag(a.publish("--sign-key", str(node_key), env=env))
    write_aot_hash(a, "c3" * 32, b"unsigned artifact")
    unsigned = published_tag(a.publish())
    assert all(t.startswith("fleet-vllm-cpu-avx512-") for t in (first, second, unsigned))

    r = compact(fleet, "--key", str(node_pub), "--sign-key", str(ci_key), "--keep-for", "0s", fleet.repo, env=env)
    merged = published_tag(r)
    assert merged.startswith("fleet-vllm-cpu-avx512-") and merged not in (first, second), str(r)
    assert f"not compacted: {fleet.repo}:{unsigned}" in r.stderr, "only what the node key signed is merged"
    labels = fleet.run("inspect", "--plain-http", "--json", f"{fleet.repo}:{merged}").json()["labels"]
    assert labels["io.kserve.km/cache-hash"] == f"{first_hash},{second_hash}", labels
    assert labels["cache.vllm.image/entry-count"] == "2", labels
    assert labels["io.kserve.km/cache-root-env"].startswith("VLLM_CACHE_ROOT="), labels
    assert sorted(s["tag"] for s in json.loads(labels["io.mcvfs.fleet/merged"])) == sorted([first, second])
    # --keep-for 0s: the merged tags go in the same run; the unsigned one, not merged, stays.
    removed = sorted(l.split()[1] for l in r.stdout.splitlines() if l.startswith("removed "))
    assert removed == sorted([f"{fleet.repo}:{first}", f"{fleet.repo}:{second}"]), str(r)
    assert fleet.fleet_tags() == sorted([merged, unsigned])

    # A mount that takes only what the compaction key signed serves both hashes, byte for byte.
    consumer.wait_refreshed_with(merged)
    used = {u["name"]: u for u in consumer.status()["used"]}
    assert used[merged]["signedBy"], used
    assert {path: (consumer.path / path).read_bytes() for path in files} == files
