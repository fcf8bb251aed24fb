"""HTTPS registries: `--ca-file` adds a private CA to the trusted set; without it the certificate is refused."""
from __future__ import annotations

CERT_WORDS = ("certificate", "ssl", "tls", "verify", "issuer")


def test_ca_file_trusts_a_private_registry(mcvfs, tls_registry):
    pop, cert = tls_registry
    doc = mcvfs.run("ls", "--ca-file", str(cert.ca_path), "--gpu", "cuda:90", "--json", f"{pop.host}/org/cache").json()
    assert {i["tag"]: i["digest"] for i in doc["images"]} == \
        {tag: d for (repo, tag), d in pop.digests.items() if repo == "org/cache"}
    doc = mcvfs.run("inspect", "--ca-file", str(cert.ca_path), "--json", f"{pop.host}/org/cache:cuda-sm90").json()
    assert doc["digest"] == pop.digests[("org/cache", "cuda-sm90")]


def test_untrusted_certificate_is_a_clear_error(mcvfs, tls_registry):
    pop, _ = tls_registry
    r = mcvfs.run("inspect", "--timeout", "5", f"{pop.host}/org/cache:cuda-sm90")
    assert r.rc == 1, r
    assert any(w in r.error_line.lower() for w in CERT_WORDS), r
