"""Signing and verification against a real registry, cross-checked with an independent implementation.

The independent side is this file's own cosign-compatible signer and checker, written from cosign's formats
(specs/SIGNATURE_SPEC.md and go-containerregistry's image layout for the legacy `.sig` image; cosign v3's
`WriteAttestationNewBundleFormat` referrer, the Sigstore bundle and DSSE specs for the bundle layout) with
`cryptography` only: a signature either side makes must verify with the other. The mount tests then show that
`mcvfs mount --key` never exposes an image whose signature is missing, from another key, about another digest, or
tampered, and says why; and that a signed mount keeps serving through a registry outage from the signatures it
stored, refusing one altered on disk.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.secret import SecretBox

from support.images import OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, RegistryAPI, mcv_labels, sha256_digest
from support.mcvfs import Mcvfs
from support.registry import Registry, require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
CUDA90 = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
REPO = "org/signed"
SCRATCH = "org/scratch"  # images tests sign as they go, kept out of the repository the mount tests mount
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ZERO_TIME = "0001-01-01T00:00:00Z"
PASSWORD = "correct horse battery"


# -- the independent implementation -------------------------------------------------------------------------

def go_json(value) -> bytes:
    """Go's `json.Marshal` for maps and strings: compact, keys sorted, HTML-safe escapes. (cosign's payload
    structs declare their fields in alphabetical order, so sorted keys are also Go's struct order.)"""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def cosign_payload(repository: str, digest: str, annotations: dict[str, str] | None = None) -> bytes:
    return go_json({"critical": {"identity": {"docker-reference": repository},
                                 "image": {"docker-manifest-digest": digest},
                                 "type": "cosign container image signature"},
                    "optional": annotations or None})


def cosign_config(diff_ids: list[str]) -> bytes:
    """The config go-containerregistry's mutate.Append gives cosign's signature image (zero timestamps)."""
    return (f'{{"architecture":"","created":"{ZERO_TIME}","history":['
            + ",".join(f'{{"created":"{ZERO_TIME}"}}' for _ in diff_ids)
            + '],"os":"","rootfs":{"type":"layers","diff_ids":['
            + ",".join(f'"{d}"' for d in diff_ids) + ']},"config":{}}').encode()


def descriptor_json(d: dict) -> str:
    """go-containerregistry's v1.Descriptor field order."""
    out = f'{{"mediaType":"{d["mediaType"]}","size":{d["size"]},"digest":"{d["digest"]}"'
    if d.get("annotations"):
        out += ',"annotations":' + go_json(d["annotations"]).decode()
    return out + "}"


def cosign_manifest(config: bytes, layers: list[dict]) -> bytes:
    return ('{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST + '","config":'
            + descriptor_json({"mediaType": OCI_CONFIG, "size": len(config), "digest": sha256_digest(config)})
            + ',"layers":[' + ",".join(descriptor_json(l) for l in layers) + "]}").encode()


def sig_tag(digest: str) -> str:
    return digest.replace("sha256:", "sha256-") + ".sig"


def existing_layers(api: RegistryAPI, repo: str, digest: str) -> list[dict]:
    try:
        body, _, _ = api.get_manifest(repo, sig_tag(digest))
    except Exception:
        return []
    return json.loads(body)["layers"]


def py_sign(api: RegistryAPI, repo: str, digest: str, key: ec.EllipticCurvePrivateKey, *,
            payload_digest: str | None = None, tamper: bool = False,
            annotations: dict[str, str] | None = None) -> bytes:
    """Signs `digest` as `cosign sign --key --tlog-upload=false` would, appending to the `.sig` image.
    `payload_digest` makes the payload name another image; `tamper` flips a bit of the signature."""
    payload = cosign_payload(f"{api.base.removeprefix('http://')}/{repo}", payload_digest or digest, annotations)
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if tamper:
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    layers = existing_layers(api, repo, digest)
    layers.append({"mediaType": SIMPLESIGNING, "size": len(payload), "digest": api.push_blob(repo, payload),
                   "annotations": {SIG_ANNOTATION: base64.b64encode(signature).decode()}})
    config = cosign_config([l["digest"] for l in layers])
    api.push_blob(repo, config)
    api.push_manifest(repo, sig_tag(digest), cosign_manifest(config, layers), OCI_MANIFEST)
    return payload


def py_check(api: RegistryAPI, repo: str, digest: str, public_pem: bytes) -> list[dict]:
    """Reads the `.sig` image and returns the payloads whose signature verifies with the key and which name
    `digest`; checks along the way that the image has cosign's exact shape."""
    key = serialization.load_pem_public_key(public_pem)
    body, media_type, _ = api.get_manifest(repo, sig_tag(digest))
    manifest = json.loads(body)
    assert media_type == OCI_MANIFEST and manifest["mediaType"] == OCI_MANIFEST
    config = api.get_blob(repo, manifest["config"]["digest"])
    assert config == cosign_config([l["digest"] for l in manifest["layers"]]), config
    assert body == cosign_manifest(config, manifest["layers"]), body
    verified = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == SIMPLESIGNING
        blob = api.get_blob(repo, layer["digest"])
        assert sha256_digest(blob) == layer["digest"] and len(blob) == layer["size"]
        try:
            key.verify(base64.b64decode(layer["annotations"][SIG_ANNOTATION]), blob, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        payload = json.loads(blob)
        if payload["critical"]["image"]["docker-manifest-digest"] == digest:
            verified.append({"payload": payload, "bytes": blob})
    return verified


def py_bundle(api: RegistryAPI, repo: str, digest: str, size: int, key: ec.EllipticCurvePrivateKey) -> None:
    """A cosign v3-style signature: a Sigstore bundle v0.3 (DSSE over an in-toto statement with cosign's sign
    predicate, key-based, no transparency log) attached as a referrer with cosign's annotations; this registry has no
    referrers API, so it is listed in the fallback index at tag `sha256-<hex>` (replacing it), as cosign and oras
    do."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                            "subject": [{"name": f"{api.base.removeprefix('http://')}/{repo}",
                                         "digest": {"sha256": digest.removeprefix("sha256:")}}],
                            "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}}).encode()
    payload_type = "application/vnd.in-toto+json"
    signature = key.sign(pae(payload_type, statement), ec.ECDSA(hashes.SHA256()))
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = json.dumps({"mediaType": BUNDLE_TYPE,
                         "verificationMaterial": {"publicKey": {"hint": base64.b64encode(
                             hashlib.sha256(der).digest()).decode()}, "tlogEntries": []},
                         "dsseEnvelope": {"payload": base64.b64encode(statement).decode(), "payloadType": payload_type,
                                          "signatures": [{"sig": base64.b64encode(signature).decode(),
                                                          "keyid": ""}]}}).encode()
    empty = b"{}"
    annotations = {"org.opencontainers.image.created": "2026-01-01T00:00:00Z",
                   "dev.sigstore.bundle.content": "dsse-envelope",
                   "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
                           "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                      "digest": api.push_blob(repo, empty), "size": len(empty)},
                           "layers": [{"mediaType": BUNDLE_TYPE, "digest": api.push_blob(repo, bundle),
                                       "size": len(bundle)}],
                           "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": size},
                           "annotations": annotations}).encode()
    manifest_digest = api.push_manifest(repo, sha256_digest(manifest), manifest, OCI_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
                                       "artifactType": BUNDLE_TYPE, "annotations": annotations}]}).encode()
    api.push_manifest(repo, digest.replace("sha256:", "sha256-"), index, OCI_INDEX)


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def bundle_referrers(api: RegistryAPI, repo: str, digest: str) -> list[dict]:
    """The referrers tag schema's index at `sha256-<hex>` (this registry has no referrers API)."""
    try:
        body, media_type, _ = api.get_manifest(repo, digest.replace("sha256:", "sha256-"))
    except Exception:
        return []
    assert media_type == OCI_INDEX, media_type
    return [d for d in json.loads(body)["manifests"] if d.get("artifactType") == BUNDLE_TYPE]


def py_check_bundle(api: RegistryAPI, repo: str, digest: str, public_pem: bytes) -> list[dict]:
    """Reads cosign v3's layout independently and returns the statements whose DSSE signature verifies with the key
    and which name `digest`: each referrer must have cosign's exact shape (empty config, one bundle layer, the image
    as subject, the bundle annotations), each bundle v0.3 a key hint and an in-toto statement with cosign's sign
    predicate."""
    key = serialization.load_pem_public_key(public_pem)
    image_body, image_type, _ = api.get_manifest(repo, digest)
    verified = []
    for listed in bundle_referrers(api, repo, digest):
        body, media_type, _ = api.get_manifest(repo, listed["digest"])
        assert media_type == OCI_MANIFEST and sha256_digest(body) == listed["digest"] and len(body) == listed["size"]
        manifest = json.loads(body)
        assert manifest["artifactType"] == BUNDLE_TYPE
        assert manifest["subject"] == {"mediaType": image_type, "digest": digest, "size": len(image_body)}
        assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        assert api.get_blob(repo, manifest["config"]["digest"]) == b"{}"
        assert manifest["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
        assert manifest["annotations"]["dev.sigstore.bundle.predicateType"] == "https://sigstore.dev/cosign/sign/v1"
        assert listed["annotations"] == manifest["annotations"]
        [layer] = manifest["layers"]
        assert layer["mediaType"] == BUNDLE_TYPE
        blob = api.get_blob(repo, layer["digest"])
        assert sha256_digest(blob) == layer["digest"] and len(blob) == layer["size"]
        bundle = json.loads(blob)
        assert bundle["mediaType"] == BUNDLE_TYPE and "x509CertificateChain" not in bundle["verificationMaterial"]
        envelope = bundle["dsseEnvelope"]
        assert envelope["payloadType"] == "application/vnd.in-toto+json"
        payload = base64.b64decode(envelope["payload"])
        [signature] = envelope["signatures"]
        try:
            key.verify(base64.b64decode(signature["sig"]), pae(envelope["payloadType"], payload),
                       ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        statement = json.loads(payload)
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
        subjects = [s for s in statement["subject"] if s["digest"].get("sha256") == digest.removeprefix("sha256:")]
        if subjects:
            der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            assert bundle["verificationMaterial"]["publicKey"]["hint"] == base64.b64encode(
                hashlib.sha256(der).digest()).decode()
            verified.append({"bundle": bundle, "subject": subjects[0]})
    return verified


def py_decrypt_cosign_key(pem: str, password: str) -> ec.EllipticCurvePrivateKey:
    """go-securesystemslib `encrypted.Decrypt`: scrypt (hashlib) then NaCl secretbox (PyNaCl) over PKCS#8."""
    lines = pem.strip().splitlines()
    assert lines[0] in ("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----", "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----")
    doc = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert doc["kdf"]["name"] == "scrypt" and doc["cipher"]["name"] == "nacl/secretbox"
    params = doc["kdf"]["params"]
    key = hashlib.scrypt(password.encode(), salt=base64.b64decode(doc["kdf"]["salt"]), n=params["N"], r=params["r"],
                         p=params["p"], maxmem=256 << 20, dklen=32)
    pkcs8 = SecretBox(key).decrypt(base64.b64decode(doc["ciphertext"]), base64.b64decode(doc["cipher"]["nonce"]))
    return serialization.load_der_private_key(pkcs8, password=None)


def py_encrypt_cosign_key(key: ec.EllipticCurvePrivateKey, password: str) -> str:
    """go-securesystemslib `encrypted.Encrypt` with its defaults, in cosign's PEM wrapping."""
    salt, nonce = os.urandom(32), os.urandom(24)
    box_key = hashlib.scrypt(password.encode(), salt=salt, n=32768, r=8, p=1, maxmem=256 << 20, dklen=32)
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    ciphertext = SecretBox(box_key).encrypt(pkcs8, nonce).ciphertext
    doc = ('{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"%s"},'
           '"cipher":{"name":"nacl/secretbox","nonce":"%s"},"ciphertext":"%s"}') % (
        base64.b64encode(salt).decode(), base64.b64encode(nonce).decode(), base64.b64encode(ciphertext).decode())
    body = base64.b64encode(doc.encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + "\n".join(lines) + \
        "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"


# -- fixtures -------------------------------------------------------------------------------------------------

def marker_image(api: RegistryAPI, repo: str, tag: str) -> tuple[str, int]:
    """A cache image whose one layer holds `io.triton.cache/<TAG>/marker`: which images a mount exposes is then
    visible by name. Labels are the cuda-90 fixture's (any cache image's labels would do)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("io.triton.cache", f"io.triton.cache/{tag.upper()}"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = f"image {tag}\n".encode()
        info = tarfile.TarInfo(f"io.triton.cache/{tag.upper()}/marker")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    pushed = api.push_image(repo, tag, [(layer, OCI_LAYER_TAR)], labels=mcv_labels(CUDA90),
                            uncompressed_layers=[layer])
    return pushed["digest"], len(pushed["body"]), sha256_digest(layer)


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


def key_fingerprint(pem_file: Path) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, as mcvfs (and Rekor) name keys."""
    key = serialization.load_pem_public_key(pem_file.read_bytes())
    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


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


# -- the mount enforces it ----------------------------------------------------------------------------------

class Mount:
    def __init__(self, m: Mcvfs, cache: Path, mountpoint: Path):
        self.m, self.cache, self.mountpoint = m, cache, mountpoint
        self.pid: int | None = None

    def start(self, *args: str):
        self.mountpoint.mkdir(exist_ok=True)
        r = self.m.run("mount", "--plain-http", "--cache-dir", self.cache, "--gpu", "all", "--read-only",
                       *args, self.mountpoint)
        if r.rc == 0:
            self.pid = self.status()["pid"]
        return r

    def status(self) -> dict:
        return json.loads((self.mountpoint / ".mcvfs" / "status.json").read_text())

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.cache / "logs").glob("mount-*.log"))

    def stop(self):
        if self.pid is None:
            return
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.pid = None


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
    # Nothing of a refused image was even downloaded: only the signed image's layer is in the cache.
    cached = {"sha256:" + p.name for p in (mount.cache / "blobs" / "sha256").iterdir()}
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


# -- outages: signatures kept in the cache ------------------------------------------------------------------

def stored_payload(cache: Path, digest: str) -> Path:
    """The stored simple-signing payload of `digest`'s legacy signature: record -> .sig manifest -> its layer."""
    record = json.loads((cache / "signatures" / "images" / "sha256" / f"{digest.removeprefix('sha256:')}.json")
                        .read_text())
    blobs = cache / "signatures" / "blobs" / "sha256"
    manifest = json.loads((blobs / record["tags"][sig_tag(digest)].removeprefix("sha256:")).read_text())
    return blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")


def test_signed_mount_keeps_serving_through_a_registry_outage(world: World, tmp_path):
    """Verified online once, a node that remounts while its registry is down serves the signed images from the
    signatures it stored (both layouts), still refuses what was never validly signed, and refuses an image whose
    stored signature was altered on disk."""
    repo = "org/outage"
    m = mcvfs_for(tmp_path)
    cache = tmp_path / "cache"
    with Registry(tmp_path / "registry") as registry:
        api = RegistryAPI(registry.host)
        digests = {tag: marker_image(api, repo, tag)[0] for tag in ("both", "bundle", "legacy", "unsigned")}
        for tag, fmt in (("both", "both"), ("bundle", "bundle"), ("legacy", "legacy")):
            r = m.run("sign", "--plain-http", "--key", world.trusted_key, "--signature-format", fmt,
                      f"{registry.host}/{repo}:{tag}", env={"COSIGN_PASSWORD": PASSWORD})
            assert r.rc == 0, r
        online = Mount(m, cache, tmp_path / "mnt")
        args = ("--timeout", "2", "--key", world.trusted_pub, f"{registry.host}/{repo}")
        try:
            assert online.start(*args).rc == 0
            for tag in ("both", "bundle", "legacy"):  # the first read fetches each layer into the cache
                assert (online.mountpoint / tag.upper() / "marker").read_text() == f"image {tag}\n"
            assert not (online.mountpoint / "UNSIGNED").exists()
        finally:
            online.stop()
        # `fetch` pre-warms a node the same way: it records the catalog and keeps the signatures it verified.
        for tag in ("both", "legacy"):
            r = m.run("fetch", "--plain-http", "--cache-dir", cache, "--gpu", "all", "--key", world.trusted_pub,
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
            tag: [f"key sha256:{key_fingerprint(world.trusted_pub)}"] for tag in ("both", "bundle", "legacy")}
        reasons = {i["name"]: i["reason"] for i in status["skipped"]}
        assert "no signature found" in reasons["unsigned"], reasons
        assert "verified the signatures stored at the last online verification" in outage.log()
    finally:
        outage.stop()

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
        assert named.start("--timeout", "2", "--key", world.trusted_pub, f"{registry.host}/{repo}:both").rc == 0
    finally:
        named.stop()
    refused = Mount(m, cache, tmp_path / "mnt").start("--timeout", "2", "--key", world.trusted_pub,
                                                        f"{registry.host}/{repo}:legacy")
    assert refused.rc == 1 and "altered on disk" in refused.error_line, refused
