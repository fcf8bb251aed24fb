"""`mcvfs fetch`: layer blobs into `<cache-dir>/blobs/sha256/<hex>`, digest-verified, through redirects, by
several processes at once, and never a corrupt byte committed."""
from __future__ import annotations

import hashlib

from conftest import BASIC_PASSWORD, BASIC_USER, TOKEN_PASSWORD, TOKEN_USER, start_token_registry, stop_token_registry
from support.mcvfs import all_files, blob_files, sha256_file
from support.proxy import FaultProxy, RedirectTarget


def assert_blob_store_is_verified(cache_dir) -> None:
    """Every file under blobs/sha256/ is named by its own digest: nothing partial, temporary or corrupt."""
    for digest, path in blob_files(cache_dir).items():
        assert path.is_file() and not path.is_symlink(), path
        assert sha256_file(path) == digest, f"{path} does not hold the bytes its name promises"


def layer_digests(layout) -> list[str]:
    return [l["digest"] for l in layout.manifest()["layers"]]


def test_fetch_downloads_verified_layers(mcvfs, anon, layouts, cache_dir):
    r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(cache_dir), f"{anon.host}/org/cache:cuda-sm90")
    assert r.rc == 0, r
    blobs = blob_files(cache_dir)
    for digest in layer_digests(layouts.cuda90):
        assert digest in blobs, (digest, sorted(blobs))
        assert blobs[digest].read_bytes() == layouts.cuda90.blob(digest)
        assert digest in r.stdout or digest.split(":")[1] in r.stdout, r
    assert len([l for l in r.stdout.splitlines() if l.strip()]) == len(layer_digests(layouts.cuda90)), r
    assert_blob_store_is_verified(cache_dir)


def test_fetch_again_is_idempotent(mcvfs, anon, layouts, cache_dir):
    ref = f"{anon.host}/org/cache:rocm-gfx942"
    first = mcvfs.run("fetch", "--plain-http", "--gpu", "hip:gfx942", "--cache-dir", str(cache_dir), ref)
    second = mcvfs.run("fetch", "--plain-http", "--gpu", "hip:gfx942", "--cache-dir", str(cache_dir), ref)
    assert first.rc == 0 and second.rc == 0, (first, second)
    for digest in layer_digests(layouts.hip942):
        assert blob_files(cache_dir)[digest].read_bytes() == layouts.hip942.blob(digest)
    assert_blob_store_is_verified(cache_dir)


def test_fetch_index_with_gpu_selects_only_the_matching_image(mcvfs, anon, layouts, cache_dir):
    r = mcvfs.run("fetch", "--plain-http", "--gpu", "hip:gfx942:64", "--cache-dir", str(cache_dir),
                  f"{anon.host}/org/formats:multi")
    assert r.rc == 0, r
    blobs = blob_files(cache_dir)
    assert set(layer_digests(layouts.hip942)) <= set(blobs), sorted(blobs)
    assert not set(layer_digests(layouts.cuda90)) & set(blobs), "a layer for another GPU was downloaded"
    assert_blob_store_is_verified(cache_dir)


def test_fetch_with_basic_auth(mcvfs, basic, layouts, cache_dir):
    r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:80", "--creds", f"{BASIC_USER}:{BASIC_PASSWORD}",
                  "--cache-dir", str(cache_dir), f"{basic.host}/org/cache:cuda-sm80")
    assert r.rc == 0, r
    for digest in layer_digests(layouts.cuda80):
        assert blob_files(cache_dir)[digest].read_bytes() == layouts.cuda80.blob(digest)


def test_fetch_digest_mismatch_fails_and_commits_nothing(mcvfs, fresh_registry, layouts, cache_dir):
    (layer,) = layer_digests(layouts.cuda90)
    path = fresh_registry.registry.blob_path(layer)
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 4096):  # bit rot: same length, different bytes
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(data).hexdigest()

    r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(cache_dir),
                  f"{fresh_registry.host}/org/cache:cuda-sm90")
    assert r.rc == 1, r
    assert layer.split(":")[1] in r.error_line, f"the error must name the expected digest:\n{r}"
    assert actual in r.error_line, f"the error must name the actual digest:\n{r}"
    assert layer not in blob_files(cache_dir), "a corrupt blob was committed under its expected name"
    assert_blob_store_is_verified(cache_dir)
    leftovers = [p for p in all_files(cache_dir) if p.is_file() and sha256_file(p) == "sha256:" + actual]
    assert not leftovers, f"the corrupt download was left behind: {leftovers}"
    partial = [p for p in all_files(cache_dir) if p.is_file() and p.stat().st_size == len(data)]
    assert not partial, f"a file the size of the corrupt blob was left behind: {partial}"


def test_fetch_follows_blob_redirect_without_sending_credentials(mcvfs, basic, layouts, cache_dir):
    with RedirectTarget(basic.host, creds=basic.creds) as storage, FaultProxy(basic.host) as proxy:
        proxy.redirect_blobs_to = storage
        r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--creds", f"{BASIC_USER}:{BASIC_PASSWORD}",
                      "--cache-dir", str(cache_dir), f"{proxy.host}/org/cache:cuda-sm90")
        assert r.rc == 0, r
        for digest in layer_digests(layouts.cuda90):
            assert blob_files(cache_dir)[digest].read_bytes() == layouts.cuda90.blob(digest)
        assert storage.seen, "the blob was not fetched from the redirect target"
        assert all(s["host"].startswith("localhost:") for s in storage.seen), storage.seen
        assert [s["authorization"] for s in storage.seen] == [None] * len(storage.seen), \
            f"the registry's credentials were sent to another host: {storage.seen}"
        blob_gets = [s for s in proxy.seen if s.kind == "blobs" and s.method == "GET"]
        assert any("Authorization" in s.headers for s in blob_gets), "the registry itself got no credentials"


def test_concurrent_fetches_share_one_cache_dir(mcvfs, anon, layouts, cache_dir):
    with FaultProxy(anon.host) as proxy:
        proxy.delay("blobs", 1.0, times=4, methods=("GET",))  # keep both downloads in flight together
        ref = f"{proxy.host}/org/cache:cuda-sm90"
        procs = [mcvfs.popen("fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(cache_dir), ref) for _ in range(2)]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            results.append((p.returncode, out, err))
    assert [rc for rc, _, _ in results] == [0, 0], results
    blobs = blob_files(cache_dir)
    for digest in layer_digests(layouts.cuda90):
        assert blobs[digest].read_bytes() == layouts.cuda90.blob(digest)
    assert_blob_store_is_verified(cache_dir)
    blob_dir = cache_dir / "blobs" / "sha256"
    (layer,) = layer_digests(layouts.cuda90)
    assert [p.name for p in blob_dir.iterdir() if layer.split(":")[1] in p.name] == [layer.split(":")[1]], \
        sorted(p.name for p in blob_dir.iterdir())


def test_token_expiry_refreshes_within_one_run(mcvfs, tmp_path, layouts, cache_dir):
    """Tokens live 2 s (and the registry refuses them after that). The proxy holds the first blob request for
    3 s, so it reaches the registry with an expired token: the client must get a new token and carry on."""
    pop = start_token_registry(tmp_path / "token", layouts, expires_in=2, registry_leeway_s=60)
    try:
        with FaultProxy(pop.host) as proxy:
            proxy.delay("blobs", 3.0, times=1, methods=("GET",))
            issued_before, mark = pop.issuer.issued_count, pop.registry.mark()
            r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--creds", f"{TOKEN_USER}:{TOKEN_PASSWORD}",
                          "--cache-dir", str(cache_dir), f"{proxy.host}/org/cache:cuda-sm90")
            assert r.rc == 0, r
            for digest in layer_digests(layouts.cuda90):
                assert blob_files(cache_dir)[digest].read_bytes() == layouts.cuda90.blob(digest)
            seen = pop.registry.requests_since(mark)
            assert any(s.status == 401 and "/blobs/" in s.uri for s in seen), \
                f"the delayed request should have reached the registry with an expired token: {seen}"
            assert pop.issuer.issued_count - issued_before >= 2, pop.issuer.issued[issued_before:]
    finally:
        stop_token_registry(pop)


def test_fetch_of_a_hostile_layer_writes_nothing_outside_the_cache(mcvfs, anon, tmp_path, cache_dir):
    """A layer whose names climb out (`../escape`, `/abs`) or link out: fetch may store the blob or refuse the
    layer, but it never writes outside the cache dir, and a refusal names the entry."""
    r = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(cache_dir),
                  f"{anon.host}/org/hostile:cuda-sm90")
    assert r.rc in (0, 1), r
    if r.rc == 0:
        assert anon.hostile_layer in blob_files(cache_dir)
    else:
        assert "escape" in r.error_line or "hostile" in r.error_line.lower(), r
    assert_blob_store_is_verified(cache_dir)
    names = {p.name for p in tmp_path.rglob("*")} | {p.name for p in cache_dir.parent.parent.glob("*")}
    assert not names & {"escape", "escape2", "abs", "x"}, sorted(names)
