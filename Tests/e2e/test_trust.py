"""Signing and verification against a real registry, cross-checked with an independent implementation.

The independent side is support/cosign_format.py, a cosign-compatible signer and checker of both layouts written
from cosign's formats with `cryptography` only: a signature either side makes must verify with the other. The
mount tests then show that `mcvfs mount --key` never exposes an image whose signature is missing, from another
key, about another digest, or tampered, and says why (test_trust_outage.py: and through a registry outage).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import sigstore_pki as pki
from support.cosign_format import (
    attach_bundle, bundle_referrers, cosign_payload, existing_layers, py_bundle, py_check, py_check_bundle, py_decrypt_cosign_key,
    py_encrypt_cosign_key, py_sign, sig_tag,
)
from support.images import RegistryAPI
from support.mcvfs import Mcvfs
from support.net import wait_until
from support.registry import Registry, require_tool
from support.signed_images import Mount, key_fingerprint, marker_image

REPO = "org/signed"
SCRATCH = "org/scratch"  # images tests sign as they go, kept out of the repository the mount tests mount
PASSWORD = "correct horse battery"


# -- fixtures -------------------------------------------------------------------------------------------------

@dataclass
class World:
    registry: Registry
    api: RegistryAPI
    keydir: Path
    trusted_pub: Path
    trusted_key: Path
    other: ec.EllipticCurvePrivateKey
    other_pub: Path
    digests: dict[str, str]
    layers: dict[str, str]  # tag -> digest of its one layer

    @property
    def host(self) -> str:
        return self.registry.host

    def ref(self, tag: str | None = None, repo: str = REPO) -> str:
        return f"{self.host}/{repo}" + (f":{tag}" if tag else "")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    for tool in ("docker-registry", "fusermount3"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("trust")
    with Registry(work / "registry") as registry:
        api = RegistryAPI(registry.host)
        keydir = work / "keys"
        keydir.mkdir()
        runner = Mcvfs(work / "home")
        gen = subprocess.run([runner.binary, "generate-key-pair"], cwd=keydir, capture_output=True, text=True,
                             env={**runner.env, "COSIGN_PASSWORD": PASSWORD}, stdin=subprocess.DEVNULL, timeout=120)
        assert gen.returncode == 0, gen.stderr
        other = ec.generate_private_key(ec.SECP256R1())
        other_pub = keydir / "other.pub"
        other_pub.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
        digests, sizes, layers = {}, {}, {}
        for tag in ("signed", "unsigned", "otherkey", "wrongdigest", "tampered", "pysigned", "bundled"):
            digests[tag], sizes[tag], layers[tag] = marker_image(api, REPO, tag)
        digests["scratch"], _, _ = marker_image(api, SCRATCH, "scratch")
        w = World(registry, api, keydir, keydir / "cosign.pub", keydir / "cosign.key", other, other_pub, digests,
                  layers)

        # What the mount tests rely on. "signed": mcvfs' own signature; "pysigned" and "bundled": the trusted key
        # is not the Python key, so those verify only under --key other.pub.
        sign = runner.run("sign", "--plain-http", "--key", w.trusted_key, w.ref("signed"),
                          env={"COSIGN_PASSWORD": PASSWORD})
        assert sign.rc == 0, sign
        py_sign(api, REPO, digests["otherkey"], other)
        # A real signature by the trusted key's holder would need its private key in Python; instead the payload
        # naming another image is signed by `other` and the mount test uses a policy trusting both keys.
        py_sign(api, REPO, digests["wrongdigest"], other, payload_digest=digests["signed"])
        py_sign(api, REPO, digests["tampered"], other, tamper=True)
        py_sign(api, REPO, digests["pysigned"], other)
        py_bundle(api, REPO, digests["bundled"], sizes["bundled"], other)
        yield w


def mcvfs_for(tmp_path: Path) -> Mcvfs:
    return Mcvfs(tmp_path / "home")


# -- key files ----------------------------------------------------------------------------------------------------

def test_generate_key_pair_writes_cosign_format(world: World):
    key_text = world.trusted_key.read_text()
    assert key_text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert os.stat(world.trusted_key).st_mode & 0o777 == 0o600
    body = "".join(key_text.strip().splitlines()[1:-1])
    doc = json.loads(base64.b64decode(body))
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"] == {"name": "nacl/secretbox", "nonce": doc["cipher"]["nonce"]}
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    # PKCS#8 P-256 (~138 bytes) + the 16-byte Poly1305 tag.
    assert len(base64.b64decode(doc["ciphertext"])) > 100
    public = serialization.load_pem_public_key(world.trusted_pub.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"


def test_generated_key_decrypts_independently_and_matches_the_public_key(world: World):
    private = py_decrypt_cosign_key(world.trusted_key.read_text(), PASSWORD)
    public = serialization.load_pem_public_key(world.trusted_pub.read_bytes())
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(*der) == public.public_bytes(*der)
    with pytest.raises(Exception):
        py_decrypt_cosign_key(world.trusted_key.read_text(), PASSWORD + "x")


def test_mcvfs_signs_with_an_independently_encrypted_key(world: World, tmp_path):
    """A cosign.key written by the Python implementation: mcvfs decrypts it and its signature verifies in Python."""
    key_file = tmp_path / "py.key"
    key_file.write_text(py_encrypt_cosign_key(world.other, "pw"))
    digest, _, _ = marker_image(world.api, SCRATCH, "pykey")
    m = mcvfs_for(tmp_path)
    r = m.run("sign", "--plain-http", "--key", key_file, world.ref("pykey", SCRATCH), env={"COSIGN_PASSWORD": "pw"})
    assert r.rc == 0, r
    assert len(py_check(world.api, SCRATCH, digest, world.other_pub.read_bytes())) == 1


def test_generate_key_pair_refuses_to_overwrite(world: World, tmp_path):
    m = mcvfs_for(tmp_path)
    (tmp_path / "cosign.key").write_text("keep me")
    out = subprocess.run([m.binary, "generate-key-pair"], cwd=tmp_path, capture_output=True, text=True,
                         env={**m.env, "COSIGN_PASSWORD": ""}, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == 1 and "already exists" in out.stderr
    assert (tmp_path / "cosign.key").read_text() == "keep me"


def test_sign_with_wrong_password_fails(world: World, tmp_path):
    r = mcvfs_for(tmp_path).run("sign", "--plain-http", "--key", world.trusted_key, world.ref("scratch", SCRATCH),
                                env={"COSIGN_PASSWORD": "not it"})
    assert r.rc == 1 and "wrong password" in r.error_line, r


# -- sign and verify ------------------------------------------------------------------------------------------

def test_mcvfs_signature_verifies_with_mcvfs_and_the_independent_checker(world: World, tmp_path):
    m = mcvfs_for(tmp_path)
    digest = world.digests["signed"]
    r = m.run("verify", "--plain-http", "--key", world.trusted_pub, world.ref("signed"))
    assert r.rc == 0, r
    fingerprint = key_fingerprint(world.trusted_pub)
    assert f"key sha256:{fingerprint}" in r.stdout and digest in r.stdout
    report = m.run("verify", "--plain-http", "--key", world.trusted_pub, "--json", world.ref("signed")).json()
    assert report["verified"] is True and report["digest"] == digest
    # By default both layouts: cosign v1/v2 and containers/image read the first, cosign v3 the second.
    assert [s["layout"] for s in report["signatures"]] == ["legacy", "bundle"]
    assert {s["key"] for s in report["signatures"]} == {f"sha256:{fingerprint}"}
    assert report["signatures"][0]["dockerReference"] == f"{world.host}/{REPO}"
    assert report["signatures"][1]["predicateType"] == "https://sigstore.dev/cosign/sign/v1"

    checked = py_check(world.api, REPO, digest, world.trusted_pub.read_bytes())
    assert len(checked) == 1
    # The payload bytes are exactly Go's json.Marshal form of cosign's payload.
    assert checked[0]["bytes"] == cosign_payload(f"{world.host}/{REPO}", digest)
    assert b'"optional":null' in checked[0]["bytes"]
    bundles = py_check_bundle(world.api, REPO, digest, world.trusted_pub.read_bytes())
    assert len(bundles) == 1 and "annotations" not in bundles[0]["subject"]


def test_sign_appends_and_keeps_other_signatures(world: World, tmp_path):
    m = mcvfs_for(tmp_path)
    digest = world.digests["scratch"]
    py_sign(world.api, SCRATCH, digest, world.other)
    first = existing_layers(world.api, SCRATCH, digest)
    r = m.run("sign", "--plain-http", "--key", world.trusted_key, "-a", "env=prod", "-a", "team=gpu <&>",
              world.ref("scratch", SCRATCH), env={"COSIGN_PASSWORD": PASSWORD})
    assert r.rc == 0, r
    layers = existing_layers(world.api, SCRATCH, digest)
    assert len(layers) == 2 and layers[0] == first[0]
    # Both keys' signatures verify, with mcvfs and with the independent checker.
    assert len(py_check(world.api, SCRATCH, digest, world.other_pub.read_bytes())) == 1
    mine = py_check(world.api, SCRATCH, digest, world.trusted_pub.read_bytes())
    assert len(mine) == 1
    assert mine[0]["bytes"] == cosign_payload(f"{world.host}/{SCRATCH}", digest, {"env": "prod", "team": "gpu <&>"})
    assert b"gpu \\u003c\\u0026\\u003e" in mine[0]["bytes"]
    for pub in (world.trusted_pub, world.other_pub):
        assert m.run("verify", "--plain-http", "--key", pub, world.ref("scratch", SCRATCH)).rc == 0
    # Required annotations: present with the value, or refused with the reason.
    assert m.run("verify", "--plain-http", "--key", world.trusted_pub, "-a", "env=prod", world.ref("scratch", SCRATCH)).rc == 0
    bad = m.run("verify", "--plain-http", "--key", world.trusted_pub, "-a", "env=dev", world.ref("scratch", SCRATCH))
    assert bad.rc == 1 and "required annotation 'env'" in bad.stderr, bad
    # The bundle carries the annotations on its statement's subject, as cosign v3 does.
    [bundle] = py_check_bundle(world.api, SCRATCH, digest, world.trusted_pub.read_bytes())
    assert bundle["subject"]["annotations"] == {"env": "prod", "team": "gpu <&>"}
    # Signing again with the same key and payload adds nothing, in either layout (cosign's duplicate detection).
    again = m.run("sign", "--plain-http", "--key", world.trusted_key, "-a", "env=prod", "-a", "team=gpu <&>",
                  world.ref("scratch", SCRATCH), env={"COSIGN_PASSWORD": PASSWORD})
    assert again.rc == 0 and again.stdout.count("nothing pushed") == 2, again
    assert len(existing_layers(world.api, SCRATCH, digest)) == 2
    assert len(bundle_referrers(world.api, SCRATCH, digest)) == 1


def test_sign_never_drops_signatures_it_cannot_read(world: World, tmp_path):
    """With the `.sig` image's config blob gone, appending is impossible: sign fails rather than replace it."""
    digest, _, _ = marker_image(world.api, SCRATCH, "lostconfig")
    py_sign(world.api, SCRATCH, digest, world.other)
    before, _, _ = world.api.get_manifest(SCRATCH, sig_tag(digest))
    config = json.loads(before)["config"]["digest"]
    gone = world.api._request("DELETE", f"/v2/{SCRATCH}/blobs/{config}")
    assert gone.status_code == 202, gone.text
    r = mcvfs_for(tmp_path).run("sign", "--plain-http", "--key", world.trusted_key, world.ref("lostconfig", SCRATCH),
                                env={"COSIGN_PASSWORD": PASSWORD})
    assert r.rc == 1 and "not found" in r.error_line, r
    assert world.api.get_manifest(SCRATCH, sig_tag(digest))[0] == before


def test_independent_signature_verifies_with_mcvfs(world: World, tmp_path):
    m = mcvfs_for(tmp_path)
    report = m.run("verify", "--plain-http", "--key", world.other_pub, "--json", world.ref("pysigned")).json()
    assert report["verified"] is True
    assert report["signatures"][0]["dockerReference"] == f"{world.host}/{REPO}"
    # By digest too; and the trusted key does not accept it.
    by_digest = f"{world.host}/{REPO}@{world.digests['pysigned']}"
    assert m.run("verify", "--plain-http", "--key", world.other_pub, by_digest).rc == 0
    wrong = m.run("verify", "--plain-http", "--key", world.trusted_pub, world.ref("pysigned"))
    assert wrong.rc == 1 and "does not verify" in wrong.stderr, wrong


def test_bundle_referrer_through_fallback_tag_verifies(world: World, tmp_path):
    report = mcvfs_for(tmp_path).run("verify", "--plain-http", "--key", world.other_pub, "--json",
                                     world.ref("bundled")).json()
    assert report["verified"] is True
    assert [s["layout"] for s in report["signatures"]] == ["bundle"]
    assert report["signatures"][0]["predicateType"] == "https://sigstore.dev/cosign/sign/v1"


@pytest.mark.parametrize("tag, reason", [
    ("unsigned", "has no signatures"),
    ("otherkey", "does not verify"),
    ("tampered", "does not verify"),
])
def test_verify_fails_with_the_reason(world: World, tmp_path, tag, reason):
    r = mcvfs_for(tmp_path).run("verify", "--plain-http", "--key", world.trusted_pub, world.ref(tag))
    assert r.rc == 1, r
    assert reason in r.stderr, r
    assert r.error_line.startswith("mcvfs: error: ")


def test_keyless_policy_refuses_key_signatures(world: World, tmp_path):
    r = mcvfs_for(tmp_path).run("verify", "--plain-http", "--certificate-identity", "ci@example.com",
                                "--certificate-oidc-issuer", "https://issuer.example", world.ref("signed"))
    assert r.rc == 1, r
    assert "keyless policy but the signature carries no certificate" in r.stderr, r


def test_policy_without_a_rule_for_the_repository_trusts_nothing(world: World, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"repositories": {"elsewhere.example/org/cache": {"keys": [str(world.trusted_pub)]}}}))
    r = mcvfs_for(tmp_path).run("verify", "--plain-http", "--policy", policy, world.ref("signed"))
    assert r.rc == 1 and f"no rule for {world.host}/{REPO}" in r.stderr, r


def test_verify_refuses_a_payload_naming_another_image(world: World, tmp_path):
    r = mcvfs_for(tmp_path).run("verify", "--plain-http", "--key", world.other_pub, "--json",
                                world.ref("wrongdigest"))
    assert r.rc == 1
    report = json.loads(r.stdout)
    assert report["verified"] is False
    assert any(f"names {world.digests['signed']}" in f["reason"] for f in report["failures"]), report


@pytest.mark.parametrize("fmt", ["bundle", "legacy"])
def test_sign_in_one_layout(world: World, tmp_path, fmt):
    digest, _, _ = marker_image(world.api, SCRATCH, f"only-{fmt}")
    m = mcvfs_for(tmp_path)
    r = m.run("sign", "--plain-http", "--key", world.trusted_key, "--signature-format", fmt, "-a", "env=prod",
              world.ref(f"only-{fmt}", SCRATCH), env={"COSIGN_PASSWORD": PASSWORD})
    assert r.rc == 0, r
    pem = world.trusted_pub.read_bytes()
    if fmt == "bundle":
        assert existing_layers(world.api, SCRATCH, digest) == []
        assert len(py_check_bundle(world.api, SCRATCH, digest, pem)) == 1
        assert f"listed in {world.host}/{SCRATCH}:{digest.replace(':', '-')}" in r.stdout
    else:
        assert bundle_referrers(world.api, SCRATCH, digest) == []
        assert len(py_check(world.api, SCRATCH, digest, pem)) == 1
    report = m.run("verify", "--plain-http", "--key", world.trusted_pub, "-a", "env=prod", "--json",
                   world.ref(f"only-{fmt}", SCRATCH)).json()
    assert [s["layout"] for s in report["signatures"]] == [fmt]
    bad = m.run("verify", "--plain-http", "--key", world.trusted_pub, "-a", "env=dev", world.ref(f"only-{fmt}", SCRATCH))
    assert bad.rc == 1 and "required annotation 'env'" in bad.stderr, bad


def test_bundle_signature_on_a_registry_with_other_referrers(world: World, tmp_path):
    """The fallback index keeps what it lists: signing appends, and an attestation stays an attestation."""
    digest, size, _ = marker_image(world.api, SCRATCH, "referred")
    py_bundle(world.api, SCRATCH, digest, size, world.other)
    r = mcvfs_for(tmp_path).run("sign", "--plain-http", "--key", world.trusted_key, "--signature-format", "bundle",
                                world.ref("referred", SCRATCH), env={"COSIGN_PASSWORD": PASSWORD})
    assert r.rc == 0, r
    assert len(bundle_referrers(world.api, SCRATCH, digest)) == 2
    assert len(py_check_bundle(world.api, SCRATCH, digest, world.trusted_pub.read_bytes())) == 1
    for pub in (world.trusted_pub, world.other_pub):
        assert mcvfs_for(tmp_path).run("verify", "--plain-http", "--key", pub, world.ref("referred", SCRATCH)).rc == 0


def test_keyless_cosign_v3_signature_verifies_and_mounts(world: World, tmp_path):
    """cosign v3's default keyless signature of an image: a bundle referrer whose DSSE statement is logged to a
    Rekor v2 log (hashedrekord of the PAE) with an RFC 3161 timestamp, made by the independent private instance."""
    repo = "org/keyless"
    digest, size, _ = marker_image(world.api, repo, "keyless")
    ca, tsa, log = pki.fulcio(), pki.TimestampAuthority.create(), pki.Log.v2()
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)
    key = ec.generate_private_key(ec.SECP256R1())
    signing = pki.sign("dsse", pki.statement(digest.removeprefix("sha256:")), key,
                       pki.signing_certificate(ca, key, not_before=start))
    bundle = signing.bundle([log.entry(signing.hashedrekord_v2(), "hashedrekord", "0.0.2")],
                            [tsa.timestamp(signing.signature, start + dt.timedelta(minutes=1))])
    attach_bundle(world.api, repo, digest, size, json.dumps(bundle).encode())
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(pki.trusted_root(fulcio_ca=ca, logs=[log.trusted_root_entry()],
                                                tsas=[pki.tsa_root_entry(tsa)])))
    policy = ["--certificate-identity", pki.IDENTITY, "--certificate-oidc-issuer", pki.ISSUER, "--trusted-root", root]
    m = mcvfs_for(tmp_path)
    report = m.run("verify", "--plain-http", *policy, "--json", world.ref("keyless", repo)).json()
    assert [s["layout"] for s in report["signatures"]] == ["bundle"]
    assert report["signatures"][0]["identity"] == pki.IDENTITY and report["signatures"][0]["signingTimes"]
    # Without the private root (the bundled public-good one) nothing vouches for the time or the log.
    refused = m.run("verify", "--plain-http", *policy[:4], world.ref("keyless", repo))
    assert refused.rc == 1 and "no verified time" in refused.stderr, refused
    mount = Mount(m, tmp_path / "cache", tmp_path / "mnt")
    try:
        assert mount.start(*policy, world.ref(None, repo)).rc == 0
        assert (mount.mountpoint / "KEYLESS" / "marker").read_text() == "image keyless\n"
        assert mount.status()["used"][0]["signedBy"] == [f"{pki.IDENTITY} (issuer {pki.ISSUER})"]
    finally:
        mount.stop()


# -- the mount enforces it ----------------------------------------------------------------------------------

@pytest.fixture
def mount(tmp_path):
    mnt = Mount(mcvfs_for(tmp_path), tmp_path / "cache", tmp_path / "mnt")
    yield mnt
    mnt.stop()


def test_mount_with_key_exposes_only_validly_signed_images(world: World, mount: Mount):
    r = mount.start("--key", world.trusted_pub, world.ref())
    assert r.rc == 0, r
    shown = sorted(p.name for p in mount.mountpoint.iterdir() if not p.name.startswith("."))
    assert shown == ["SIGNED"], shown
    assert (mount.mountpoint / "SIGNED" / "marker").read_text() == "image signed\n"
    status = mount.status()
    assert [i["name"] for i in status["used"]] == ["signed"]
    assert status["used"][0]["signedBy"] == [f"key sha256:{key_fingerprint(world.trusted_pub)}"]
    reasons = {i["name"]: i["reason"] for i in status["skipped"]}
    assert "no signature found" in reasons["unsigned"]
    for tag in ("otherkey", "tampered", "pysigned", "wrongdigest", "bundled"):
        assert "signature policy" in reasons[tag] and "does not verify" in reasons[tag], reasons[tag]
    # The log says the same, one line per refused image.
    log = mount.log()
    for tag in ("unsigned", "otherkey", "tampered"):
        assert f"not using {tag} " in log, log
    # Nothing of a refused image was even downloaded: only the signed image's layer is in the cache (committed in
    # the background once it was served).
    blobs = mount.cache / "blobs" / "sha256"
    wait_until(lambda: (blobs / world.layers["signed"].removeprefix("sha256:")).exists(), timeout=30,
               what="the signed layer's commit")
    cached = {"sha256:" + p.name for p in blobs.iterdir()}
    assert world.layers["signed"] in cached
    assert not cached & {world.layers[t] for t in ("unsigned", "otherkey", "tampered", "wrongdigest", "bundled")}


def test_mount_with_policy_trusting_both_keys(world: World, mount: Mount, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"repositories": {f"{world.host}/org/*": {
        "keys": [str(world.trusted_pub), os.path.relpath(world.other_pub, tmp_path)]}}}))
    r = mount.start("--policy", policy, world.ref())
    assert r.rc == 0, r
    shown = sorted(p.name for p in mount.mountpoint.iterdir() if not p.name.startswith("."))
    assert shown == ["BUNDLED", "OTHERKEY", "PYSIGNED", "SIGNED"], shown
    reasons = {i["name"]: i["reason"] for i in mount.status()["skipped"]}
    assert f"names {world.digests['signed']}, not {world.digests['wrongdigest']}" in reasons["wrongdigest"], \
        reasons["wrongdigest"]
    assert "does not verify" in reasons["tampered"]
    assert "no signature found" in reasons["unsigned"]


def test_mount_of_a_named_signed_tag_serves(world: World, mount: Mount):
    r = mount.start("--key", world.trusted_pub, world.ref("signed"))
    assert r.rc == 0, r
    assert (mount.mountpoint / "SIGNED" / "marker").read_text() == "image signed\n"


@pytest.mark.parametrize("tag, reason", [
    ("unsigned", "no signature found"),
    ("tampered", "does not verify"),
    ("wrongdigest", "does not verify"),
])
def test_mount_of_a_named_tag_that_fails_exits_1(world: World, mount: Mount, tag, reason):
    r = mount.start("--key", world.trusted_pub, world.ref(tag))
    assert r.rc == 1, r
    line = r.error_line
    assert f"{world.ref(tag)} ({world.digests[tag]}) is refused" in line and reason in line, line
    assert not os.path.ismount(mount.mountpoint)


def test_mount_without_policy_flags_is_unchanged(world: World, mount: Mount):
    r = mount.start(world.ref("unsigned"))
    assert r.rc == 0, r
    assert (mount.mountpoint / "UNSIGNED" / "marker").exists()


def test_fetch_with_key_skips_unsigned(world: World, tmp_path):
    m = mcvfs_for(tmp_path)
    ok = m.run("fetch", "--plain-http", "--cache-dir", tmp_path / "c", "--gpu", "all", "--key", world.trusted_pub,
               world.ref("signed"))
    assert ok.rc == 0, ok
    bad = m.run("fetch", "--plain-http", "--cache-dir", tmp_path / "c", "--gpu", "all", "--key", world.trusted_pub,
                world.ref("unsigned"))
    assert bad.rc == 1 and "is refused" in bad.error_line, bad
