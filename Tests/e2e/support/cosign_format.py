"""cosign's signature layouts, written and read independently of mcvfs, with `cryptography` and PyNaCl only.

From cosign's formats: specs/SIGNATURE_SPEC.md and go-containerregistry's image layout for the legacy `.sig`
image; cosign v3's `WriteAttestationNewBundleFormat` referrer, the Sigstore bundle and DSSE specs for the bundle
layout; go-securesystemslib's `encrypted` package for `cosign.key`. The trust tests hold mcvfs to it both ways.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.secret import SecretBox

from .images import OCI_INDEX, OCI_MANIFEST, RegistryAPI, sha256_digest

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ZERO_TIME = "0001-01-01T00:00:00Z"


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
    predicate, key-based, no transparency log) attached as a referrer (`attach_bundle`)."""
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
    attach_bundle(api, repo, digest, size, bundle)


def attach_bundle(api: RegistryAPI, repo: str, digest: str, size: int, bundle: bytes) -> None:
    """Pushes `bundle` as cosign v3 does: a referrer manifest of the image with cosign's annotations, listed in the
    fallback index at tag `sha256-<hex>` (replacing it; this registry has no referrers API)."""
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
