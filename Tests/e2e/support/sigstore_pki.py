"""A private Sigstore instance for tests, written from the specifications with `cryptography` only.

It is the independent side of the trust tests: mcvfs verifies what this makes, and refuses each broken variant.
- A Fulcio-like CA (root and intermediate) issuing short-lived code-signing certificates with an identity SAN and
  the OIDC-issuer extension (1.3.6.1.4.1.57264.1.8).
- A Rekor v2-style log (rekor-tiles): Ed25519 key, `hashedrekord` 0.0.2 entries, an RFC 6962 Merkle tree with
  inclusion proofs, checkpoints as C2SP signed notes, optional witness cosignatures (C2SP tlog-cosignature).
- A Rekor v1-style log: ECDSA key, `hashedrekord` 0.0.1 entries with signed entry timestamps (SETs).
- A timestamp authority: RFC 3161 responses built here in DER (any genTime, embedded certificates or not), or
  by `openssl ts -reply` (a second, real TSA implementation).
- `trusted_root.json` and bundles v0.3 (message signature or DSSE) around all of it.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import rfc3161
from .rfc3161 import der

UTC = dt.timezone.utc
IDENTITY = "https://github.com/example/cache/.github/workflows/publish.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"
V2_ORIGIN = "log2025-1.rekor.test.example"
V1_ORIGIN = "rekor.test.example"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO = "application/vnd.in-toto+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def canonical(value) -> bytes:
    """RFC 8785 for the values used here (strings without escapes that differ, integers): sorted, compact."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- certificates ---------------------------------------------------------------------------------------

def name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test.example"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def ca_certificate(subject: x509.Name, key, issuer: x509.Name | None = None, issuer_key=None,
                   not_before: dt.datetime | None = None, path_length: int | None = 1,
                   eku: list | None = None) -> x509.Certificate:
    now = dt.datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - dt.timedelta(days=30))
               .not_valid_after(now + dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@dataclass
class Authority:
    """A CA: its key and chain (issuing certificate first, root last)."""
    key: object
    chain: list[x509.Certificate]

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def fulcio(label: str = "fulcio") -> Authority:
    root_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = ca_certificate(name(f"{label} root"), root_key)
    intermediate = ca_certificate(name(f"{label} intermediate"), key, root.subject, root_key, path_length=0,
                                  eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    return Authority(key, [intermediate, root])


def signing_certificate(ca: Authority, key, *, identity: str = IDENTITY, issuer: str = ISSUER,
                        not_before: dt.datetime, lifetime: dt.timedelta = dt.timedelta(minutes=10)
                        ) -> x509.Certificate:
    """A Fulcio-style leaf: empty subject, identity SAN, code signing, the OIDC issuer as a DER UTF8String."""
    issuer_value = issuer.encode()
    return (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_before + lifetime)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity)] if "://" in identity else [x509.RFC822Name(identity)]),
                critical=True)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8"),
                                                      der(0x0C, issuer_value)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA384()))


# -- the timestamp authority ----------------------------------------------------------------------------

@dataclass
class TimestampAuthority:
    key: ec.EllipticCurvePrivateKey
    chain: list[x509.Certificate]  # leaf, root
    uri: str = "https://tsa.test.example/api/v1/timestamp"

    @classmethod
    def create(cls, label: str = "tsa", *, leaf_not_before: dt.datetime | None = None,
               leaf_lifetime: dt.timedelta = dt.timedelta(days=365)) -> "TimestampAuthority":
        root_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP256R1())
        root = ca_certificate(name(f"{label} root"), root_key, path_length=0)
        start = leaf_not_before or dt.datetime.now(UTC) - dt.timedelta(days=1)
        leaf = (x509.CertificateBuilder().subject_name(name(f"{label} signer")).issuer_name(root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + leaf_lifetime)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=False, crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                               critical=False)
                .sign(root_key, hashes.SHA384()))
        return cls(key, [leaf, root])

    def timestamp(self, message: bytes, gen_time: dt.datetime, *, embed_certificate: bool = True,
                  serial: int = 1) -> bytes:
        """An RFC 3161 TimeStampResp over SHA-256(message) by this authority's signing certificate."""
        return rfc3161.timestamp_response(self.key, self.chain[0], message, gen_time,
                                          embed_certificate=embed_certificate, serial=serial)

    def openssl_timestamp(self, message: bytes, workdir: Path) -> bytes:
        """The same, made by `openssl ts -query` and `openssl ts -reply` (genTime is now)."""
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "message").write_bytes(message)
        (workdir / "tsa.key").write_bytes(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (workdir / "tsa.pem").write_bytes(self.chain[0].public_bytes(serialization.Encoding.PEM))
        (workdir / "serial").write_text("01\n")
        (workdir / "tsa.cnf").write_text(
            "[tsa]\ndefault_tsa = tsa1\n[tsa1]\n"
            f"serial = {workdir}/serial\nsigner_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.2\n"
            "digests = sha256\ness_cert_id_alg = sha256\nordering = no\ntsa_name = no\n"
            "ess_cert_id_chain = no\naccuracy = secs:1\n")
        run = lambda *args: subprocess.run(["openssl", "ts", *args], check=True, capture_output=True)
        run("-query", "-data", str(workdir / "message"), "-sha256", "-cert", "-no_nonce",
            "-out", str(workdir / "request.tsq"))
        run("-reply", "-config", str(workdir / "tsa.cnf"), "-queryfile", str(workdir / "request.tsq"),
            "-signer", str(workdir / "tsa.pem"), "-inkey", str(workdir / "tsa.key"), "-out",
            str(workdir / "response.tsr"))
        return (workdir / "response.tsr").read_bytes()


# -- logs -----------------------------------------------------------------------------------------------

def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH."""
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(tree_root(leaves[:k]), tree_root(leaves[k:]))


def tree_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return tree_path(m, leaves[:k]) + [tree_root(leaves[k:])]
    return tree_path(m - k, leaves[k:]) + [tree_root(leaves[:k])]


@dataclass
class Witness:
    name: str
    key: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    def raw(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def cosign(self, note_text: bytes, when: int) -> str:
        """A C2SP tlog-cosignature/v1 line."""
        hint = sha256(self.name.encode() + b"\n\x04" + self.raw())[:4]
        signature = self.key.sign(b"cosignature/v1\ntime %d\n" % when + note_text)
        return f"\u2014 {self.name} {b64(hint + when.to_bytes(8, 'big') + signature)}\n"


@dataclass
class Log:
    """A transparency log: Rekor v2-style (Ed25519, checkpoints named by host, no SETs) or v1-style (ECDSA, SETs,
    checkpoints whose origin carries a tree ID)."""
    version: int
    origin: str
    key: object
    leaves: list[bytes] = field(default_factory=list)
    valid_from: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC) - dt.timedelta(days=30))

    @classmethod
    def v2(cls, origin: str = V2_ORIGIN) -> "Log":
        return cls(2, origin, ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def v1(cls, origin: str = V1_ORIGIN) -> "Log":
        return cls(1, origin, ec.generate_private_key(ec.SECP256R1()))

    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def log_id(self) -> bytes:
        if self.version == 2:
            raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return sha256(self.origin.encode() + b"\n\x01" + raw)
        return sha256(self.spki())

    def sign(self, message: bytes) -> bytes:
        if self.version == 2:
            return self.key.sign(message)
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))

    def checkpoint_origin(self) -> str:
        return self.origin if self.version == 2 else f"{self.origin} - 3904496407287907110"

    def checkpoint(self, size: int, root: bytes, *, origin: str | None = None, name: str | None = None,
                   signed: bool = True, lines: list[str] | None = None, witnesses: list[Witness] = ()) -> str:
        """A signed note over `origin\\nsize\\nroot\\n`; `lines` replaces the body lines (to break it)."""
        body_lines = lines if lines is not None else [origin or self.checkpoint_origin(), str(size), b64(root)]
        text = ("\n".join(body_lines) + "\n").encode()
        signature_lines = ""
        if signed:
            signer = name or self.origin
            signature_lines += f"\u2014 {signer} {b64(self.log_id()[:4] + self.sign(text))}\n"
        for witness in witnesses:
            signature_lines += witness.cosign(text, int(dt.datetime.now(UTC).timestamp()))
        return text.decode() + "\n" + signature_lines

    def append(self, body: bytes, filler: int = 5) -> int:
        """Adds `filler` unrelated entries, then `body`; returns its index."""
        for i in range(filler):
            self.leaves.append(b'{"filler":%d}' % (len(self.leaves) + i))
        self.leaves.append(body)
        return len(self.leaves) - 1

    def entry(self, body: bytes, kind: str, version: str, *, integrated_time: int | None = None) -> dict:
        index = self.append(body)
        size = len(self.leaves)
        root = tree_root(self.leaves)
        entry = {
            "logIndex": str(index), "logId": {"keyId": b64(self.log_id())},
            "kindVersion": {"kind": kind, "version": version},
            "inclusionProof": {"logIndex": str(index), "rootHash": b64(root), "treeSize": str(size),
                               "hashes": [b64(h) for h in tree_path(index, self.leaves)],
                               "checkpoint": {"envelope": self.checkpoint(size, root)}},
            "canonicalizedBody": b64(body),
        }
        if self.version == 1:
            assert integrated_time is not None
            entry["integratedTime"] = str(integrated_time)
            promise = canonical({"body": b64(body), "integratedTime": integrated_time,
                                 "logID": self.log_id().hex(), "logIndex": index})
            entry["inclusionPromise"] = {"signedEntryTimestamp": b64(self.sign(promise))}
        return entry

    def trusted_root_entry(self, *, start: dt.datetime | None = None, end: dt.datetime | None = None,
                           drop_start: bool = False) -> dict:
        valid = {} if drop_start else {"start": rfc3339(start or self.valid_from)}
        if end:
            valid["end"] = rfc3339(end)
        return {"baseUrl": f"https://{self.origin}", "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": b64(self.spki()),
                              "keyDetails": "PKIX_ED25519" if self.version == 2 else "PKIX_ECDSA_P256_SHA_256",
                              "validFor": valid},
                "logId": {"keyId": b64(self.log_id())}}


# -- bundles ----------------------------------------------------------------------------------------------

def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def statement(digest_hex: str, predicate_type: str = "https://sigstore.dev/cosign/sign/v1",
              annotations: dict | None = None, name: str | None = None) -> bytes:
    subject = {"digest": {"sha256": digest_hex}}
    if name:
        subject["name"] = name
    if annotations:
        subject["annotations"] = annotations
    return json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": [subject],
                       "predicateType": predicate_type, "predicate": {}}).encode()


@dataclass
class Signing:
    """One signature and what verifies it: the content, the key, the certificate (keyless) and the evidence."""
    content: str  # "message" or "dsse"
    payload: bytes  # the artifact (message) or the in-toto statement (dsse)
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate | None
    signature: bytes = b""

    @property
    def signed_bytes(self) -> bytes:
        return self.payload if self.content == "message" else pae(INTOTO, self.payload)

    def verifier(self) -> dict:
        if self.certificate is not None:
            return {"keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "x509Certificate": {"rawBytes": b64(self.certificate.public_bytes(serialization.Encoding.DER))}}
        return {"keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "publicKey": {"rawBytes": b64(self.key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))}}

    def hashedrekord_v2(self) -> bytes:
        """rekor-tiles' hashedrekord 0.0.2; for DSSE the digest is of the pre-authentication encoding."""
        return canonical({"apiVersion": "0.0.2", "kind": "hashedrekord", "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": b64(sha256(self.signed_bytes))},
            "signature": {"content": b64(self.signature), "verifier": self.verifier()}}}})

    def hashedrekord_v1(self) -> bytes:
        pem = (self.certificate.public_bytes(serialization.Encoding.PEM) if self.certificate is not None else
               self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
        return canonical({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": sha256(self.payload).hex()}},
            "signature": {"content": b64(self.signature), "publicKey": {"content": b64(pem)}}}})

    def dsse_v1(self) -> bytes:
        pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        return canonical({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": sha256(b"envelope").hex()},
            "payloadHash": {"algorithm": "sha256", "value": sha256(self.payload).hex()},
            "signatures": [{"signature": b64(self.signature), "verifier": b64(pem)}]}})

    def bundle(self, entries: list[dict], timestamps: list[bytes]) -> dict:
        material: dict = {"tlogEntries": entries}
        if self.certificate is not None:
            material["certificate"] = {"rawBytes": b64(self.certificate.public_bytes(serialization.Encoding.DER))}
        else:
            material["publicKey"] = {"hint": b64(sha256(self.key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)))}
        if timestamps:
            material["timestampVerificationData"] = {"rfc3161Timestamps": [{"signedTimestamp": b64(t)}
                                                                           for t in timestamps]}
        bundle = {"mediaType": BUNDLE_V03, "verificationMaterial": material}
        if self.content == "message":
            bundle["messageSignature"] = {"messageDigest": {"algorithm": "SHA2_256", "digest": b64(sha256(self.payload))},
                                          "signature": b64(self.signature)}
        else:
            bundle["dsseEnvelope"] = {"payload": b64(self.payload), "payloadType": INTOTO,
                                      "signatures": [{"sig": b64(self.signature), "keyid": ""}]}
        return bundle


def sign(content: str, payload: bytes, key: ec.EllipticCurvePrivateKey,
         certificate: x509.Certificate | None) -> Signing:
    signing = Signing(content, payload, key, certificate)
    signing.signature = key.sign(signing.signed_bytes, ec.ECDSA(hashes.SHA256()))
    return signing


def trusted_root(*, fulcio_ca: Authority | None, logs: list[dict], tsas: list[dict]) -> dict:
    """A trusted_root.json without CT logs (the private CA issues no SCTs; mcvfs then requires none)."""
    authorities = []
    if fulcio_ca is not None:
        authorities.append({"subject": {"organization": "test.example", "commonName": "fulcio"},
                            "uri": "https://fulcio.test.example",
                            "certChain": {"certificates": [
                                {"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))}
                                for c in fulcio_ca.chain]},
                            "validFor": {"start": rfc3339(fulcio_ca.chain[-1].not_valid_before_utc)}})
    return {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "tlogs": logs,
            "certificateAuthorities": authorities, "ctlogs": [], "timestampAuthorities": tsas}


def tsa_root_entry(tsa: TimestampAuthority, *, start: dt.datetime | None = None,
                   end: dt.datetime | None = None) -> dict:
    valid = {"start": rfc3339(start or tsa.chain[-1].not_valid_before_utc)}
    if end:
        valid["end"] = rfc3339(end)
    return {"subject": {"organization": "test.example", "commonName": "tsa"}, "uri": tsa.uri,
            "certChain": {"certificates": [{"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))}
                                           for c in tsa.chain]},
            "validFor": valid}


# -- committed fixtures for the Swift unit tests ---------------------------------------------------------------

def write_fixtures(directory: Path) -> None:
    """Writes the private instance's material the unit tests verify (Tests/VerificationTests/Fixtures/test-pki):
    bundles whose times are fixed by their own evidence, so they verify forever."""
    directory.mkdir(parents=True, exist_ok=True)
    artifact = b"a GPU kernel cache, or any other file\n"
    ca, tsa, log2, log1 = fulcio(), TimestampAuthority.create(), Log.v2(), Log.v1()
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=1)

    def signing(content: str) -> Signing:
        key = ec.generate_private_key(ec.SECP256R1())
        payload = artifact if content == "message" else statement(hashlib.sha256(artifact).hexdigest())
        return sign(content, payload, key, signing_certificate(ca, key, not_before=start))

    message, dsse, legacy = signing("message"), signing("dsse"), signing("dsse")
    gen_time = start + dt.timedelta(minutes=1, milliseconds=250)
    witness = Witness("witness.test.example")
    files = {
        "artifact": artifact,
        "trusted_root.json": json.dumps(trusted_root(
            fulcio_ca=ca, logs=[log2.trusted_root_entry(), log1.trusted_root_entry()],
            tsas=[tsa_root_entry(tsa)]), indent=1).encode(),
        "rekor2-message.sigstore.json": json.dumps(message.bundle(
            [log2.entry(message.hashedrekord_v2(), "hashedrekord", "0.0.2")],
            [tsa.timestamp(message.signature, gen_time)]), indent=1).encode(),
        "rekor2-dsse.sigstore.json": json.dumps(dsse.bundle(
            [log2.entry(dsse.hashedrekord_v2(), "hashedrekord", "0.0.2")],
            [tsa.timestamp(dsse.signature, gen_time, embed_certificate=False)]), indent=1).encode(),
        "rekor1-dsse.sigstore.json": json.dumps(legacy.bundle(
            [log1.entry(legacy.dsse_v1(), "dsse", "0.0.1",
                        integrated_time=int((start + dt.timedelta(minutes=1)).timestamp()))], []), indent=1).encode(),
    }
    size = len(log2.leaves)
    root = tree_root(log2.leaves)
    files["witness.json"] = json.dumps({
        "name": witness.name, "publicKey": b64(witness.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "checkpoint": log2.checkpoint(size, root, witnesses=[witness])}, indent=1).encode()
    for name, data in files.items():
        (directory / name).write_bytes(data)


if __name__ == "__main__":
    # cd Tests/e2e && ../../.venv/bin/python -m support.sigstore_pki ../VerificationTests/Fixtures/test-pki
    import sys
    write_fixtures(Path(sys.argv[1]))
