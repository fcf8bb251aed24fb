"""RFC 3161 timestamp responses in DER, built by hand: a timestamp authority for tests that can stamp any time.

TimeStampResp { PKIStatusInfo, ContentInfo(SignedData { TSTInfo, the signer's certificate (optional), SignerInfo
with content-type, message-digest and ESS signing-certificate-v2 attributes, ECDSA-SHA256 }) }: RFC 3161 §2.4.2,
RFC 5652, RFC 5035.
"""
from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

UTC = dt.timezone.utc


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def seq(*items: bytes) -> bytes:
    return der(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return der(0x31, b"".join(sorted(items)))  # DER orders a SET OF by encoding


def integer(value: int) -> bytes:
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.insert(0, 0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(chunk)
    return der(0x06, body)


def octets(data: bytes) -> bytes:
    return der(0x04, data)


def explicit(number: int, content: bytes) -> bytes:
    return der(0xA0 | number, content)


SHA256_ALG = seq(oid("2.16.840.1.101.3.4.2.1"), der(0x05, b""))
ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"))
ID_CT_TSTINFO = "1.2.840.113549.1.9.16.1.4"


def timestamp_response(key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate, message: bytes,
                       gen_time: dt.datetime, *, embed_certificate: bool = True, serial: int = 1) -> bytes:
    """A TimeStampResp over SHA-256(message), signed with `key` as `leaf` (ECDSA, SHA-256, ESS
    signing-certificate-v2), `gen_time` with milliseconds, `leaf` embedded or not."""
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    stamp = gen_time.astimezone(UTC)
    text = stamp.strftime("%Y%m%d%H%M%S") + (f".{stamp.microsecond // 1000:03d}".rstrip("0").rstrip(".")
                                             if stamp.microsecond else "") + "Z"
    tst_info = seq(integer(1), oid("1.3.6.1.4.1.57264.2"), seq(SHA256_ALG, octets(sha256(message))),
                   integer(serial), der(0x18, text.encode()))
    attributes = [
        seq(oid("1.2.840.113549.1.9.3"), set_of(oid(ID_CT_TSTINFO))),
        seq(oid("1.2.840.113549.1.9.4"), set_of(octets(sha256(tst_info)))),
        seq(oid("1.2.840.113549.1.9.16.2.47"), set_of(seq(seq(seq(octets(sha256(leaf_der))))))),
    ]
    signature = key.sign(set_of(*attributes), ec.ECDSA(hashes.SHA256()))
    signer_info = seq(integer(1), seq(leaf.issuer.public_bytes(), integer(leaf.serial_number)), SHA256_ALG,
                      der(0xA0, b"".join(sorted(attributes))), ECDSA_SHA256, octets(signature))
    certificates = [der(0xA0, leaf_der)] if embed_certificate else []
    signed_data = seq(integer(3), set_of(SHA256_ALG), seq(oid(ID_CT_TSTINFO), explicit(0, octets(tst_info))),
                      *certificates, set_of(signer_info))
    token = seq(oid("1.2.840.113549.1.7.2"), explicit(0, signed_data))
    return seq(seq(integer(0)), token)
