"""Compile once per fleet (issue 16): a simulated fleet on one machine, nodes being real `mcvfs mount` daemons with
cache directories of their own, one real registry, real Triton. B and C mount with --refresh-interval before
anything is published; A compiles what the repository lacks (real misses) and publishes; B and C, without a
remount, hit exactly those kernels after their next refresh. Two nodes publishing one kernel at once; a consumer
with --key taking only the trusted publisher's images."""
from __future__ import annotations

import threading

from support.fleet import PASSWORD, Fleet, fleet, key_pair, published_tag  # noqa: F401 (fleet: a fixture)
from support.mounts import probe_json



def exists(path) -> bool:
    """os.stat in a fresh process (what a Triton process looking the kernel up does first)."""
    outcome = probe_json(f"print(json.dumps(attempt(lambda p: os.stat(p) and True, {str(path)!r})))")
    assert outcome in (["ok", True], ["err", "ENOENT"]), outcome
    return outcome[0] == "ok"


def test_a_kernel_compiled_on_one_node_hits_on_the_others_after_their_next_refresh(fleet: Fleet):
    b = fleet.node("b", "--refresh-interval", "1")
    c = fleet.node("c", "--refresh-interval", "1")
    a = fleet.node("a")
    daemons = {n.name: n.mount.pid for n in (a, b, c)}
    blocks = [32, 64, 128]

    lines, summary = a.compile(blocks)
    assert summary == {"kernels": 3, "hits": 0}, f"the repository has none of these: real misses\n{lines}"
    keys = a.upper_keys()
    assert len(keys) == 3, keys
    # A process on B looking them up now misses: nothing is published yet.
    assert not any(exists(b.path / key) for key in keys)

    tag = published_tag(a.publish())
    for node in (b, c):
        refresh = node.wait_refreshed_with(tag)
        assert any(line.startswith(tag + " ") for line in refresh["lastAdded"]), refresh
    # The names that were missing a moment ago are there now, on the same daemons (no remount).
    assert all(exists(b.path / key) for key in keys)
    for node in (b, c):
        lines, summary = node.compile(blocks)
        assert summary == {"kernels": 3, "hits": 3}, f"{node.name} recompiled: {lines}"
        assert node.upper_keys() == set(), f"{node.name} wrote kernels of its own"
        status = node.status()
        assert tag in [u["name"] for u in status["used"]]
        assert status["service"]["refresh"]["failures"] == 0
    assert {n.name: n.mount.pid for n in (a, b, c)} == daemons
    shown = fleet.run("status", str(b.path))
    assert shown.rc == 0 and "1 image(s) added" in shown.stdout, str(shown)

    # Fleet-wide, each unique kernel was compiled once: A's three misses, nobody else's.
    compiles = len(a.upper_keys()) + len(b.upper_keys()) + len(c.upper_keys())
    assert compiles / len(keys) == 1.0


def test_two_nodes_publishing_one_kernel_at_once_make_one_image(fleet: Fleet):
    a, b = fleet.node("a"), fleet.node("b")
    c = fleet.node("c", "--refresh-interval", "1")
    compiled = {}
    threads = [threading.Thread(target=lambda n=n: compiled.__setitem__(n.name, n.compile([256]))) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(summary["hits"] == 0 for _, summary in compiled.values()), compiled
    assert a.upper_keys() == b.upper_keys() and len(a.upper_keys()) == 1

    # Each node signs with its own key: both signatures must stay, whoever rewrote the signature lists last.
    keys = {n.name: key_pair(fleet.mcvfs, fleet.root / f"key-{n.name}") for n in (a, b)}
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(
        n.name, n.publish("--json", "--sign-key", str(keys[n.name][0]), env={"COSIGN_PASSWORD": PASSWORD})))
        for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    images = []
    for name, result in results.items():
        assert result.rc == 0, f"{name}: {result}"
        assert "error" not in result.stderr.lower(), f"{name}: {result}"
        images += result.json()["images"]
    # Whatever node was first, both built the very same image (group files are canonical): one tag, one digest.
    assert len({i["digest"] for i in images}) == 1 and len({i["tag"] for i in images}) == 1, images
    assert fleet.fleet_tags() == [images[0]["tag"]]
    for name, (_, pub) in keys.items():
        r = fleet.run("verify", "--plain-http", "--key", str(pub), f"{fleet.repo}:{images[0]['tag']}")
        assert r.rc == 0, f"{name}'s signature was lost: {r}"

    c.wait_refreshed_with(images[0]["tag"])
    status = c.status()
    assert [u["name"] for u in status["used"]].count(images[0]["tag"]) == 1
    lines, summary = c.compile([256])
    assert summary == {"kernels": 1, "hits": 1}, lines


def test_a_consumer_with_key_takes_only_the_images_the_trusted_key_signed(fleet: Fleet):
    trusted_key, trusted_pub = key_pair(fleet.mcvfs, fleet.root / "trusted", PASSWORD)
    other_key, _ = key_pair(fleet.mcvfs, fleet.root / "other", PASSWORD)
    consumer = fleet.node("consumer", "--refresh-interval", "1", "--key", str(trusted_pub))
    a = fleet.node("a")
    env = {"COSIGN_PASSWORD": PASSWORD}

    def publish_new(block: int, *args: str) -> tuple[str, str]:
        before = a.upper_keys()
        a.compile([block])
        (key,) = a.upper_keys() - before
        return key, published_tag(a.publish(*args, env=env))

    unsigned_key, unsigned = publish_new(1024)
    wrong_key, wrongly_signed = publish_new(2048, "--sign-key", str(other_key))
    good_key, signed = publish_new(4096, "--sign-key", str(trusted_key))

    consumer.wait_refreshed_with(signed)
    status = consumer.status()
    skipped = {s["name"]: s["reason"] for s in status["skipped"]}
    assert unsigned in skipped and "no signature" in skipped[unsigned], skipped
    assert wrongly_signed in skipped and "signature policy" in skipped[wrongly_signed], skipped
    assert "signed by" not in skipped[wrongly_signed]
    # Refused by the policy, both are checked again at every refresh (a signature may come later), and say why.
    refreshed = {line.split(":", 1)[0] for line in status["service"]["refresh"]["lastSkipped"]}
    assert {unsigned, wrongly_signed} <= refreshed, status["service"]["refresh"]
    used = {u["name"]: u for u in status["used"]}
    assert signed in used and used[signed]["signedBy"], used
    assert not exists(consumer.path / unsigned_key) and not exists(consumer.path / wrong_key)
    lines, summary = consumer.compile([4096])
    assert summary == {"kernels": 1, "hits": 1}, lines
    assert exists(consumer.path / good_key)
