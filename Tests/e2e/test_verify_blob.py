"""`mcvfs verify-blob` against a private Sigstore instance built by an independent implementation.

support/sigstore_pki.py plays Fulcio, a Rekor v2 log (Ed25519 checkpoints, RFC 6962 proofs, no SETs), a Rekor v1
log (SETs), witnesses and a timestamp authority (RFC 3161 built in DER, and by `openssl ts -reply`). Every happy
variant cosign v3 and sigstore clients produce must verify; every broken one must be refused, with its reason.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import sigstore_pki as pki
from support.mcvfs import Mcvfs

UTC = dt.timezone.utc
ARTIFACT = b"a GPU kernel cache, or any other file\n"


@dataclass
class Instance:
    fulcio: pki.Authority = field(default_factory=pki.fulcio)
    tsa: pki.TimestampAuthority = field(default_factory=pki.TimestampAuthority.create)
    log2: pki.Log = field(default_factory=pki.Log.v2)
    log1: pki.Log = field(default_factory=pki.Log.v1)

    def root(self, *, logs: list[dict] | None = None, tsas: list[dict] | None = None) -> dict:
        return pki.trusted_root(
            fulcio_ca=self.fulcio,
            logs=logs if logs is not None else [self.log2.trusted_root_entry(), self.log1.trusted_root_entry()],
            tsas=tsas if tsas is not None else [pki.tsa_root_entry(self.tsa)])


@pytest.fixture(scope="module")
def instance() -> Instance:
    return Instance()


@dataclass
class Case:
    bundle: dict
    root: dict
    artifact: bytes = ARTIFACT
    signing: pki.Signing | None = None


def keyless(inst: Instance, *, content: str = "message", log: str = "v2", timestamp: str = "good",
            signed_at: dt.datetime | None = None, gen_time: dt.datetime | None = None,
            gen_offset: dt.timedelta = dt.timedelta(minutes=1),
            embed_tsa_certificate: bool = True, identity: str = pki.IDENTITY) -> Case:
    """A keyless signature made the way cosign v3 makes one, with the evidence `log` and `timestamp` say."""
    start = signed_at or dt.datetime.now(UTC) - dt.timedelta(hours=1)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = pki.signing_certificate(inst.fulcio, key, identity=identity, not_before=start)
    payload = ARTIFACT if content == "message" else pki.statement(hashlib.sha256(ARTIFACT).hexdigest())
    signing = pki.sign(content, payload, key, certificate)
    entries = []
    if log == "v2":
        entries.append(inst.log2.entry(signing.hashedrekord_v2(), "hashedrekord", "0.0.2"))
    elif log == "v1":
        body = signing.hashedrekord_v1() if content == "message" else signing.dsse_v1()
        entries.append(inst.log1.entry(body, "hashedrekord" if content == "message" else "dsse", "0.0.1",
                                       integrated_time=int((start + dt.timedelta(minutes=1)).timestamp())))
    stamps = []
    when = gen_time or start + gen_offset
    if timestamp == "good":
        stamps.append(inst.tsa.timestamp(signing.signature, when, embed_certificate=embed_tsa_certificate))
    elif timestamp == "other-signature":
        stamps.append(inst.tsa.timestamp(signing.signature[:-1] + bytes([signing.signature[-1] ^ 1]), when))
    elif timestamp == "untrusted":
        stamps.append(pki.TimestampAuthority.create("rogue").timestamp(signing.signature, when))
    return Case(signing.bundle(entries, stamps), inst.root(), signing=signing)


def verify(tmp_path: Path, case: Case, *extra: str, digest: bool = False, key: Path | None = None):
    bundle, root, artifact = tmp_path / "bundle.json", tmp_path / "trusted_root.json", tmp_path / "artifact"
    bundle.write_text(json.dumps(case.bundle))
    root.write_text(json.dumps(case.root))
    artifact.write_bytes(case.artifact)
    target = "sha256:" + hashlib.sha256(case.artifact).hexdigest() if digest else artifact
    policy = ["--key", str(key)] if key else ["--certificate-identity", pki.IDENTITY,
                                                "--certificate-oidc-issuer", pki.ISSUER]
    return Mcvfs(tmp_path / "home").run("verify-blob", "--bundle", bundle, *policy, "--trusted-root", root, *extra,
                                        target)


def entry(case: Case) -> dict:
    return case.bundle["verificationMaterial"]["tlogEntries"][0]


def refused(result, reason: str):
    assert result.rc == 1, result
    assert reason in result.error_line, result


# -- what must verify ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("digest", [False, True], ids=["file", "digest"])
def test_rekor_v2_and_timestamp_message_signature(instance, tmp_path, digest):
    case = keyless(instance)
    r = verify(tmp_path, case, "--json", digest=digest)
    report = r.json()
    assert report["signer"] == f"{pki.IDENTITY} (issuer {pki.ISSUER})"
    assert report["content"] == "message signature" and report["logIndex"] == int(entry(case)["logIndex"])
    # The signing time is the TSA's genTime, the only time a Rekor v2 entry has.
    signed = dt.datetime.fromisoformat(report["signingTimes"][0].replace("Z", "+00:00"))
    assert abs((signed - (dt.datetime.now(UTC) - dt.timedelta(minutes=59))).total_seconds()) < 600


def test_rekor_v2_dsse_statement_about_the_artifact(instance, tmp_path):
    """cosign v3's layout: a DSSE in-toto statement, logged to Rekor v2 as a hashedrekord of its PAE."""
    case = keyless(instance, content="dsse")
    report = verify(tmp_path, case, "--json", digest=True).json()
    assert report["content"] == "DSSE envelope"
    assert report["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    other = verify(tmp_path, Case(case.bundle, case.root, artifact=b"another file"))
    refused(other, "not sha256:")


@pytest.mark.parametrize("content", ["message", "dsse"])
def test_rekor_v1_set_without_timestamp(instance, tmp_path, content):
    """The layout of cosign v2 and sigstore-python before Rekor v2: the SET's integrated time is the time."""
    case = keyless(instance, content=content, log="v1", timestamp="none")
    assert "inclusionPromise" in entry(case)
    assert verify(tmp_path, case).rc == 0


def test_timestamp_made_by_openssl_ts(instance, tmp_path):
    """A second, real TSA implementation: `openssl ts -reply` (its genTime is now)."""
    case = keyless(instance, timestamp="none", signed_at=dt.datetime.now(UTC) - dt.timedelta(minutes=2))
    stamp = instance.tsa.openssl_timestamp(case.signing.signature, tmp_path / "openssl-ts")
    case.bundle["verificationMaterial"]["timestampVerificationData"] = {
        "rfc3161Timestamps": [{"signedTimestamp": base64.b64encode(stamp).decode()}]}
    r = verify(tmp_path, case)
    assert r.rc == 0, r


def test_timestamp_without_embedded_certificate_uses_the_trusted_roots(instance, tmp_path):
    assert verify(tmp_path, keyless(instance, embed_tsa_certificate=False)).rc == 0


def test_witness_cosignatures_are_accepted(instance, tmp_path):
    """Cosigned checkpoints (C2SP tlog-cosignature), the witness first: its key is unknown, so it is skipped and
    the log's own signature decides."""
    case = keyless(instance)
    proof = entry(case)["inclusionProof"]
    text = proof["checkpoint"]["envelope"]
    body, signature = text.split("\n\n")
    witness = pki.Witness("witness.test.example")
    proof["checkpoint"]["envelope"] = body + "\n\n" + witness.cosign((body + "\n").encode(), 1_700_000_000) + signature
    assert verify(tmp_path, case).rc == 0


def test_validity_windows_are_closed(instance, tmp_path):
    """A TSA whose window ends exactly at the timestamp, a log whose key window ends exactly at the signing time."""
    when = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
    case = keyless(instance, signed_at=when - dt.timedelta(minutes=1), gen_time=when)
    case.root = instance.root(
        tsas=[pki.tsa_root_entry(instance.tsa, end=when)],
        logs=[instance.log2.trusted_root_entry(end=when)])
    assert verify(tmp_path, case).rc == 0


def test_managed_key_with_log_and_timestamp(instance, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    signing = pki.sign("message", ARTIFACT, key, None)
    case = Case(signing.bundle([instance.log2.entry(signing.hashedrekord_v2(), "hashedrekord", "0.0.2")],
                               [instance.tsa.timestamp(signing.signature, dt.datetime.now(UTC))]), instance.root())
    pub = tmp_path / "key.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    r = verify(tmp_path, case, "--json", key=pub)
    assert r.json()["signer"].startswith("key sha256:")
    other = tmp_path / "other.pub"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    refused(verify(tmp_path, case, key=other), "does not verify")
    # The key's signature must still be the one the log recorded.
    entry(case)["canonicalizedBody"] = base64.b64encode(pki.Signing(
        "message", b"other", key, None, signing.signature).hashedrekord_v2()).decode()
    refused(verify(tmp_path, case, key=pub), "inclusion proof does not lead to the root hash")


# -- what must be refused, and why --------------------------------------------------------------------------

def _no_log_signature(case: Case, inst: Instance):
    proof = entry(case)["inclusionProof"]
    body = proof["checkpoint"]["envelope"].split("\n\n")[0] + "\n"
    proof["checkpoint"]["envelope"] = body + "\n" + pki.Witness("witness.test.example").cosign(body.encode(), 1)


def _wrong_origin(case: Case, inst: Instance):
    proof = entry(case)["inclusionProof"]
    root = base64.b64decode(proof["rootHash"])
    proof["checkpoint"]["envelope"] = inst.log2.checkpoint(int(proof["treeSize"]), root,
                                                           origin="log2025-1.rekor.elsewhere.example")


def _checkpoint_lines(keep):
    def edit(case: Case, inst: Instance):
        proof = entry(case)["inclusionProof"]
        root = base64.b64decode(proof["rootHash"])
        lines = [inst.log2.origin, proof["treeSize"], base64.b64encode(root).decode()]
        proof["checkpoint"]["envelope"] = inst.log2.checkpoint(0, root, lines=keep(lines))
    return edit


def _flip_proof_hash(case: Case, inst: Instance):
    hashes = entry(case)["inclusionProof"]["hashes"]
    raw = bytearray(base64.b64decode(hashes[1]))
    raw[0] ^= 1
    hashes[1] = base64.b64encode(bytes(raw)).decode()


def _other_tree(case: Case, inst: Instance):
    """A checkpoint the log really signed, for another tree than the proof's."""
    proof = entry(case)["inclusionProof"]
    proof["checkpoint"]["envelope"] = inst.log2.checkpoint(int(proof["treeSize"]) + 1, pki.sha256(b"other root"))


def _no_timestamp(case: Case, inst: Instance):
    del case.bundle["verificationMaterial"]["timestampVerificationData"]


def _no_proof(case: Case, inst: Instance):
    del entry(case)["inclusionProof"]


def _tsa_window_ended(case: Case, inst: Instance):
    case.root = inst.root(tsas=[pki.tsa_root_entry(inst.tsa, end=dt.datetime.now(UTC) - dt.timedelta(hours=2))])


def _log_window_ended(case: Case, inst: Instance):
    case.root = inst.root(logs=[inst.log2.trusted_root_entry(end=dt.datetime.now(UTC) - dt.timedelta(hours=2))])


def _log_without_start(case: Case, inst: Instance):
    case.root = inst.root(logs=[inst.log2.trusted_root_entry(drop_start=True)])


def _log_not_trusted(case: Case, inst: Instance):
    case.root = inst.root(logs=[inst.log1.trusted_root_entry()])


def _entry_for_another_signature(case: Case, inst: Instance):
    other = copy.copy(case.signing)
    other.signature = case.signing.key.sign(b"something else", ec.ECDSA(pki.hashes.SHA256()))
    case.bundle["verificationMaterial"]["tlogEntries"] = [
        inst.log2.entry(other.hashedrekord_v2(), "hashedrekord", "0.0.2")]


def _other_artifact(case: Case, inst: Instance):
    case.artifact = b"not what was signed\n"


def _tsa_leaf_expired(case: Case, inst: Instance):
    start = dt.datetime.now(UTC) - dt.timedelta(days=3)
    tsa = pki.TimestampAuthority.create("short-lived", leaf_not_before=start, leaf_lifetime=dt.timedelta(days=1))
    stamp = tsa.timestamp(case.signing.signature, dt.datetime.now(UTC) - dt.timedelta(minutes=59))
    case.bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"] = [
        {"signedTimestamp": base64.b64encode(stamp).decode()}]
    case.root = inst.root(tsas=[pki.tsa_root_entry(tsa)])


BROKEN = {
    # name: (keyless() arguments, edit, reason in the error line)
    "untrusted-tsa": ({"timestamp": "untrusted"}, None, "not signed by this authority"),
    "timestamp-outside-tsa-window": ({}, _tsa_window_ended, "is outside the authority's validity"),
    "timestamp-outside-tsa-certificate": ({}, _tsa_leaf_expired, "the authority's certificate"),
    # Relative to the certificate's start, not to when the module was collected (the suite takes minutes).
    "timestamp-outside-certificate": ({"gen_offset": -dt.timedelta(minutes=30)}, None,
                                      "certificate was not valid at"),
    "timestamp-over-another-signature": ({"timestamp": "other-signature"}, None,
                                         "timestamp is over another signature"),
    "rekor-v2-without-timestamp": ({}, _no_timestamp, "no verified time for the signature"),
    "rekor-v2-without-proof": ({}, _no_proof, "has no inclusion proof"),
    "checkpoint-without-log-signature": ({}, _no_log_signature, "checkpoint is not signed by the log key"),
    "checkpoint-wrong-origin": ({}, _wrong_origin, "checkpoint origin 'log2025-1.rekor.elsewhere.example'"),
    "checkpoint-missing-root-hash": ({}, _checkpoint_lines(lambda l: l[:2]),
                                     "checkpoint body lacks an origin, a tree size or a root hash"),
    "checkpoint-missing-size": ({}, _checkpoint_lines(lambda l: [l[0], l[2]]),
                                "checkpoint body lacks an origin, a tree size or a root hash"),
    "checkpoint-of-another-tree": ({}, _other_tree, "checkpoint names another tree than the inclusion proof"),
    "proof-does-not-reach-root": ({}, _flip_proof_hash, "inclusion proof does not lead to the root hash"),
    "log-window-ended": ({}, _log_window_ended, "key was not valid at"),
    "log-without-validity-start": ({}, _log_without_start, "has no validity start"),
    "log-not-in-trusted-root": ({}, _log_not_trusted, "no entry from a trusted transparency log"),
    "entry-for-another-signature": ({}, _entry_for_another_signature, "entry records another signature"),
    "other-artifact": ({}, _other_artifact, "entry hashes another artifact"),
    "other-identity": ({"identity": "someone@else.example"}, None, "does not match"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_variant_is_refused_with_its_reason(instance, tmp_path, name):
    arguments, edit, reason = BROKEN[name]
    case = keyless(instance, **arguments)
    if edit:
        edit(case, instance)
    refused(verify(tmp_path, case), reason)


def test_malformed_inputs_are_refused(instance, tmp_path):
    case = keyless(instance)
    bundle = copy.deepcopy(case.bundle)
    bundle["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.4+json"
    refused(verify(tmp_path, Case(bundle, case.root)), "unsupported media type")
    bundle = copy.deepcopy(case.bundle)
    entry(Case(bundle, case.root))["logIndex"] = "-1"
    refused(verify(tmp_path, Case(bundle, case.root)), "negative logIndex")
    bundle = copy.deepcopy(case.bundle)
    bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0]["signedTimestamp"] = "AAAA"
    refused(verify(tmp_path, Case(bundle, case.root)), "not a DER TimeStampResp")
    missing = Mcvfs(tmp_path / "home").run("verify-blob", "--bundle", tmp_path / "nope.json", "--certificate-identity",
                                           pki.IDENTITY, tmp_path / "nope")
    assert missing.rc == 1 and missing.error_line.startswith("mcvfs: error: ")


def test_bundled_public_good_root_is_the_default(instance, tmp_path):
    """Without --trusted-root the private instance is not trusted: its CA, log and TSA are unknown."""
    case = keyless(instance)
    bundle, artifact = tmp_path / "bundle.json", tmp_path / "artifact"
    bundle.write_text(json.dumps(case.bundle))
    artifact.write_bytes(ARTIFACT)
    r = Mcvfs(tmp_path / "home").run("verify-blob", "--bundle", bundle, "--certificate-identity", pki.IDENTITY,
                                     artifact)
    refused(r, "no verified time")
