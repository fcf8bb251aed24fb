"""A signed mount through a registry outage: the signatures verified online are kept in the cache, verified again
while the registry is down, and refused when altered on disk."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.cosign_format import sig_tag
from support.images import RegistryAPI
from support.mcvfs import Mcvfs
from support.registry import Registry, require_tool
from support.signed_images import Mount, key_fingerprint, marker_image

PASSWORD = "outage"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    require_tool("fusermount3")
    directory = tmp_path_factory.mktemp("keys")
    runner = Mcvfs(directory / "home")
    made = subprocess.run([runner.binary, "generate-key-pair"], cwd=directory, capture_output=True, text=True,
                          env={**runner.env, "COSIGN_PASSWORD": PASSWORD}, stdin=subprocess.DEVNULL, timeout=120)
    assert made.returncode == 0, made.stderr
    return directory


def stored_payload(cache: Path, digest: str) -> Path:
    """The stored simple-signing payload of `digest`'s legacy signature: record -> .sig manifest -> its layer."""
    record = json.loads((cache / "signatures" / "images" / "sha256" / f"{digest.removeprefix('sha256:')}.json")
                        .read_text())
    blobs = cache / "signatures" / "blobs" / "sha256"
    manifest = json.loads((blobs / record["tags"][sig_tag(digest)].removeprefix("sha256:")).read_text())
    return blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")


def test_signed_mount_keeps_serving_through_a_registry_outage(keys: Path, tmp_path):
    """Verified online once, a node that remounts while its registry is down serves the signed images from the
    signatures it stored (both layouts), still refuses what was never validly signed, and refuses an image whose
    stored signature was altered on disk."""
    repo = "org/outage"
    m = Mcvfs(tmp_path / "home")
    key, pub = keys / "cosign.key", keys / "cosign.pub"
    cache = tmp_path / "cache"
    with Registry(tmp_path / "registry") as registry:
        api = RegistryAPI(registry.host)
        digests = {tag: marker_image(api, repo, tag)[0] for tag in ("both", "bundle", "legacy", "unsigned")}
        for tag, fmt in (("both", "both"), ("bundle", "bundle"), ("legacy", "legacy")):
            r = m.run("sign", "--plain-http", "--key", key, "--signature-format", fmt,
                      f"{registry.host}/{repo}:{tag}", env={"COSIGN_PASSWORD": PASSWORD})
            assert r.rc == 0, r
        online = Mount(m, cache, tmp_path / "mnt")
        args = ("--timeout", "2", "--key", pub, f"{registry.host}/{repo}")
        try:
            assert online.start(*args).rc == 0
            for tag in ("both", "bundle", "legacy"):  # the first read fetches each layer into the cache
                assert (online.mountpoint / tag.upper() / "marker").read_text() == f"image {tag}\n"
            assert not (online.mountpoint / "UNSIGNED").exists()
        finally:
            online.stop()
        # `fetch` pre-warms a node the same way: it records the catalog and keeps the signatures it verified.
        for tag in ("both", "legacy"):
            r = m.run("fetch", "--plain-http", "--cache-dir", cache, "--gpu", "all", "--key", pub,
                      f"{registry.host}/{repo}:{tag}")
            assert r.rc == 0, r
        stored = sorted(p.name for p in (cache / "signatures" / "images" / "sha256").iterdir())
        assert stored == sorted(f"{d.removeprefix('sha256:')}.json" for d in digests.values()), stored

    # The registry is gone: the same reference, the same policy.
    outage = Mount(m, cache, tmp_path / "mnt")
    try:
        r = outage.start(*args)
        assert r.rc == 0, r
        shown = sorted(p.name for p in outage.mountpoint.iterdir() if not p.name.startswith("."))
        assert shown == ["BOTH", "BUNDLE", "LEGACY"], shown
        assert (outage.mountpoint / "BUNDLE" / "marker").read_text() == "image bundle\n"
        status = outage.status()
        assert {i["name"]: i["signedBy"] for i in status["used"]} == {
            tag: [f"key sha256:{key_fingerprint(pub)}"] for tag in ("both", "bundle", "legacy")}
        reasons = {i["name"]: i["reason"] for i in status["skipped"]}
        assert "no signature found" in reasons["unsigned"], reasons
        assert "verified the signatures stored at the last online verification" in outage.log()
    finally:
        outage.stop()
    # --offline never asks the registry: the same verdicts, from the store.
    offline = Mount(m, cache, tmp_path / "mnt")
    try:
        assert offline.start("--offline", "--key", pub, f"{registry.host}/{repo}").rc == 0
        shown = sorted(p.name for p in offline.mountpoint.iterdir() if not p.name.startswith("."))
        assert shown == ["BOTH", "BUNDLE", "LEGACY"], shown
    finally:
        offline.stop()

    # One byte of a stored payload changed: that signature fails, the others (and the other layout) still count.
    payload = stored_payload(cache, digests["legacy"])
    payload.chmod(0o644)
    data = bytearray(payload.read_bytes())
    data[-2] ^= 0x01
    payload.write_bytes(bytes(data))
    tampered = Mount(m, cache, tmp_path / "mnt")
    try:
        assert tampered.start(*args).rc == 0
        shown = sorted(p.name for p in tampered.mountpoint.iterdir() if not p.name.startswith("."))
        assert shown == ["BOTH", "BUNDLE"], shown
        reasons = {i["name"]: i["reason"] for i in tampered.status()["skipped"]}
        assert "altered on disk" in reasons["legacy"], reasons
    finally:
        tampered.stop()
    # Named by tag (resolved from the catalog `fetch` recorded), an image verified from stored signatures serves;
    # one refused makes the mount fail with the reason.
    named = Mount(m, cache, tmp_path / "mnt")
    try:
        assert named.start("--timeout", "2", "--key", pub, f"{registry.host}/{repo}:both").rc == 0
    finally:
        named.stop()
    refused = Mount(m, cache, tmp_path / "mnt").start("--timeout", "2", "--key", pub,
                                                        f"{registry.host}/{repo}:legacy")
    assert refused.rc == 1 and "altered on disk" in refused.error_line, refused
