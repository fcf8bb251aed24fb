"""Registries that misbehave: stalls, malformed manifests, persistent server errors. mcvfs must fail with its
one-line error and exit 1, never hang (the subprocess timeout below is only a guard against a hang)."""
from __future__ import annotations

from support.mcvfs import blob_files
from support.proxy import FaultProxy, StallServer

HANG_GUARD = 60  # seconds; `--timeout 3` must end the command long before this


def test_ls_against_a_stalled_server_fails_instead_of_hanging(mcvfs):
    with StallServer() as stall:
        r = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--timeout", "3", f"{stall.host}/org/cache", timeout=HANG_GUARD)
        assert stall.accepted >= 1, "mcvfs never connected"
    assert r.rc == 1, r
    assert r.error_line


def test_fetch_with_a_stalled_blob_fails_and_commits_nothing(mcvfs, anon, layouts, cache_dir):
    with FaultProxy(anon.host) as proxy:
        proxy.stall_kinds = {"blobs"}
        r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--timeout", "3", "--cache-dir", str(cache_dir),
                      f"{proxy.host}/org/cache:cuda-sm90", timeout=HANG_GUARD)
        assert proxy.count("blobs") >= 1, proxy.counts()
    assert r.rc == 1, r
    assert r.error_line
    for layer in layouts.cuda90.manifest()["layers"]:
        assert layer["digest"] not in blob_files(cache_dir)


def test_malformed_manifest_is_a_clear_error(mcvfs, anon):
    with FaultProxy(anon.host) as proxy:
        proxy.malformed_manifest = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": '
        r = mcvfs.run("inspect", "--plain-http", f"{proxy.host}/org/cache:cuda-sm90", timeout=HANG_GUARD)
        assert proxy.count("manifests", "GET") >= 1, proxy.counts()
    assert r.rc == 1, r
    assert "manifest" in r.error_line.lower(), r


def test_persistent_server_errors_are_a_clear_error(mcvfs, anon):
    with FaultProxy(anon.host) as proxy:
        proxy.fail("manifests", 503, times=1000)
        r = mcvfs.run("inspect", "--plain-http", "--timeout", "3", f"{proxy.host}/org/cache:cuda-sm90",
                      timeout=HANG_GUARD)
        assert proxy.count("manifests") >= 1, proxy.counts()
    assert r.rc == 1, r
    assert "503" in r.error_line or "unavailable" in r.error_line.lower(), r


def test_transient_server_errors_are_retried(mcvfs, anon):
    with FaultProxy(anon.host) as proxy:
        proxy.fail("manifests", 503, times=2)
        doc = mcvfs.run("inspect", "--plain-http", "--json", f"{proxy.host}/org/cache:cuda-sm90",
                        timeout=HANG_GUARD).json()
        assert proxy.count("manifests") >= 3, proxy.counts()
    assert doc["digest"] == anon.digests[("org/cache", "cuda-sm90")]


def test_too_many_requests_is_retried_after_the_servers_delay(mcvfs, anon):
    with FaultProxy(anon.host) as proxy:
        proxy.fail("manifests", 429, times=1, headers={"Retry-After": "1"})
        doc = mcvfs.run("inspect", "--plain-http", "--json", f"{proxy.host}/org/cache:cuda-sm90",
                        timeout=HANG_GUARD).json()
        assert proxy.count("manifests") >= 2, proxy.counts()
    assert doc["digest"] == anon.digests[("org/cache", "cuda-sm90")]
