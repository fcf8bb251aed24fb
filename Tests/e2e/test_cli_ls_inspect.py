"""`mcvfs ls` and `mcvfs inspect` against real registries: anonymous, Basic, Bearer token; pagination; the
manifest and layer formats third parties push; tags that are not cache images."""
from __future__ import annotations

import base64
import json

from conftest import BASIC_PASSWORD, BASIC_USER, TAG_COUNT, TOKEN_PASSWORD, TOKEN_USER
from support.images import (
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_LAYER_TAR,
    OCI_LAYER_ZSTD, OCI_MANIFEST, mcv_labels,
)
from support.proxy import FaultProxy

AUTH_WORDS = ("401", "unauthorized", "authentication", "credentials", "denied", "auth")


def plain(pop) -> list[str]:
    return ["--plain-http", "--creds", pop.creds] if pop.creds else ["--plain-http"]


def assert_cache_listing(doc: dict, pop, repo: str = "org/cache") -> None:
    """The session's org/cache as `ls --json --gpu cuda:90` must describe it."""
    assert doc["repository"].endswith(repo), doc["repository"]
    images = {i["tag"]: i for i in doc["images"]}
    assert set(images) == {"cuda-sm90", "cuda-sm80", "rocm-gfx942"}, doc
    expected_targets = {"cuda-sm90": ["cuda:90:32"], "cuda-sm80": ["cuda:80:32"], "rocm-gfx942": ["hip:gfx942:64"]}
    for tag, image in images.items():
        assert image["digest"] == pop.digests[(repo, tag)], image
        assert image["mediaType"] == OCI_MANIFEST, image
        assert image["targets"] == expected_targets[tag], image
        assert image["kinds"] == ["triton"], image
        assert isinstance(image["size"], int) and image["size"] > 0, image
    assert images["cuda-sm90"]["compatible"] is True
    assert images["cuda-sm80"]["compatible"] is False
    assert images["rocm-gfx942"]["compatible"] is False


# -- anonymous ---------------------------------------------------------------------------------------------

def test_ls_json_lists_cache_images_with_targets_and_compatibility(mcvfs, anon):
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:90", f"{anon.host}/org/cache").json()
    assert_cache_listing(doc, anon)


def test_ls_skips_cosign_artifacts_and_images_without_cache_labels(mcvfs, anon):
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:90", f"{anon.host}/org/cache").json()
    skipped = {s["tag"]: s["reason"] for s in doc["skipped"]}
    sm90_hex = anon.digests[("org/cache", "cuda-sm90")].split(":")[1]
    assert set(skipped) == {"plain", f"sha256-{sm90_hex}.sig", f"sha256-{sm90_hex}.att", f"sha256-{sm90_hex}.sbom"}
    assert all(isinstance(r, str) and r.strip() for r in skipped.values()), skipped
    assert not {i["tag"] for i in doc["images"]} & set(skipped)


def test_ls_several_gpus_make_each_matching_image_compatible(mcvfs, anon):
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:80", "--gpu", "hip:gfx942:64",
                    f"{anon.host}/org/cache").json()
    compatible = {i["tag"]: i["compatible"] for i in doc["images"]}
    assert compatible == {"cuda-sm90": False, "cuda-sm80": True, "rocm-gfx942": True}


def test_ls_text_is_a_table(mcvfs, anon):
    r = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", f"{anon.host}/org/cache")
    assert r.rc == 0, r
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert lines[0].split() == ["TAG", "DIGEST", "TARGETS", "COMPATIBLE", "SIZE"], r
    rows = {l.split()[0]: l for l in lines[1:]}
    assert {"cuda-sm90", "cuda-sm80", "rocm-gfx942"} <= set(rows), r
    assert "cuda:90:32" in rows["cuda-sm90"] and "hip:gfx942:64" in rows["rocm-gfx942"], r


def test_inspect_json_describes_manifest_config_labels_targets_layers(mcvfs, anon, layouts):
    ref = f"{anon.host}/org/cache:cuda-sm90"
    doc = mcvfs.run("inspect", "--plain-http", "--json", ref).json()
    manifest = layouts.cuda90.manifest()
    assert doc["reference"].endswith("org/cache:cuda-sm90"), doc["reference"]
    assert doc["digest"] == anon.digests[("org/cache", "cuda-sm90")]
    assert doc["mediaType"] == OCI_MANIFEST
    assert {k: doc["config"][k] for k in ("digest", "mediaType", "size")} == \
        {k: manifest["config"][k] for k in ("digest", "mediaType", "size")}
    assert doc["labels"] == mcv_labels(layouts.cuda90_dir)
    assert doc["targets"] == ["cuda:90:32"]
    assert [{k: l[k] for k in ("digest", "mediaType", "size")} for l in doc["layers"]] == \
        [{k: l[k] for k in ("digest", "mediaType", "size")} for l in manifest["layers"]]


def inspect_format(mcvfs, anon, tag):
    return mcvfs.run("inspect", "--plain-http", "--json", f"{anon.host}/org/formats:{tag}").json()


def test_inspect_oci_gzip_image(mcvfs, anon):
    doc = inspect_format(mcvfs, anon, "oci")
    assert (doc["digest"], doc["mediaType"], doc["config"]["mediaType"]) == \
        (anon.digests[("org/formats", "oci")], OCI_MANIFEST, OCI_CONFIG)
    assert [l["mediaType"] for l in doc["layers"]] == [OCI_LAYER_GZIP]
    assert doc["targets"] == ["cuda:90:32"]


def test_inspect_docker_schema2_image(mcvfs, anon):
    doc = inspect_format(mcvfs, anon, "docker")
    assert (doc["digest"], doc["mediaType"], doc["config"]["mediaType"]) == \
        (anon.digests[("org/formats", "docker")], DOCKER_MANIFEST, DOCKER_CONFIG)
    assert [l["mediaType"] for l in doc["layers"]] == [DOCKER_LAYER_GZIP]
    assert doc["targets"] == ["cuda:90:32"]


def test_inspect_zstd_image(mcvfs, anon):
    doc = inspect_format(mcvfs, anon, "zstd")
    assert (doc["digest"], doc["mediaType"]) == (anon.digests[("org/formats", "zstd")], OCI_MANIFEST)
    assert [l["mediaType"] for l in doc["layers"]] == [OCI_LAYER_ZSTD]
    assert doc["targets"] == ["cuda:90:32"]


def test_inspect_uncompressed_layer_image(mcvfs, anon):
    doc = inspect_format(mcvfs, anon, "tar")
    assert (doc["digest"], doc["mediaType"]) == (anon.digests[("org/formats", "tar")], OCI_MANIFEST)
    assert [l["mediaType"] for l in doc["layers"]] == [OCI_LAYER_TAR]
    assert doc["targets"] == ["cuda:90:32"]


def test_inspect_index_lists_its_manifests(mcvfs, anon):
    doc = inspect_format(mcvfs, anon, "multi")
    assert doc["digest"] == anon.digests[("org/formats", "multi")]
    assert doc["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in doc["manifests"]] == \
        [anon.digests[("org/formats", "oci")], anon.digests[("org/formats", "rocm")]]


def test_inspect_by_digest(mcvfs, anon):
    digest = anon.digests[("org/cache", "rocm-gfx942")]
    doc = mcvfs.run("inspect", "--plain-http", "--json", f"{anon.host}/org/cache@{digest}").json()
    assert doc["digest"] == digest
    assert doc["targets"] == ["hip:gfx942:64"]


def test_inspect_missing_tag_is_an_error(mcvfs, anon):
    r = mcvfs.run("inspect", "--plain-http", f"{anon.host}/org/cache:no-such-tag")
    assert r.rc == 1, r
    assert "no-such-tag" in r.error_line or "not found" in r.error_line.lower() or "404" in r.error_line, r


def test_unreachable_registry_is_an_error(mcvfs):
    r = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--timeout", "3", "127.0.0.1:1/org/cache")
    assert r.rc == 1, r
    assert r.error_line


# -- pagination --------------------------------------------------------------------------------------------

def test_ls_lists_more_than_one_page_of_tags(mcvfs, anon):
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:80", f"{anon.host}/org/many").json()
    tags = sorted(i["tag"] for i in doc["images"])
    assert tags == [f"v{i:03d}" for i in range(TAG_COUNT)]
    assert {i["digest"] for i in doc["images"]} == {anon.digests[("org/many", "*")]}
    assert all(i["compatible"] for i in doc["images"])


def test_ls_follows_link_headers_when_the_registry_pages_tags(mcvfs, anon):
    """distribution 2.8 answers all tags at once; hosted registries page them. The proxy pages by 50 (at most),
    so the client must follow `Link: <...>; rel="next"`."""
    with FaultProxy(anon.host) as proxy:
        proxy.tag_page_size = 50
        doc = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:80", "--json", f"{proxy.host}/org/many").json()
        assert sorted(i["tag"] for i in doc["images"]) == [f"v{i:03d}" for i in range(TAG_COUNT)]
        assert proxy.count("tags", "GET") >= 3, proxy.counts()


# -- Basic auth --------------------------------------------------------------------------------------------

def test_basic_auth_with_creds_option(mcvfs, basic):
    doc = mcvfs.run("ls", *plain(basic), "--json", "--gpu", "cuda:90", f"{basic.host}/org/cache").json()
    assert_cache_listing(doc, basic)
    doc = mcvfs.run("inspect", *plain(basic), "--json", f"{basic.host}/org/cache:cuda-sm90").json()
    assert doc["digest"] == basic.digests[("org/cache", "cuda-sm90")]


def test_basic_auth_bad_credentials_is_a_clear_error(mcvfs, basic):
    r = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--creds", f"{BASIC_USER}:wrong", f"{basic.host}/org/cache")
    assert r.rc == 1, r
    assert any(w in r.error_line.lower() for w in AUTH_WORDS), r
    assert "wrong" not in r.stderr, "the password must not be echoed"


def test_basic_auth_without_credentials_is_a_clear_error(mcvfs, basic):
    r = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", f"{basic.host}/org/cache")
    assert r.rc == 1, r
    assert any(w in r.error_line.lower() for w in AUTH_WORDS), r


def auth_json(host: str, user: str, password: str) -> str:
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}})


def test_credentials_from_registry_auth_file(mcvfs, basic, tmp_path):
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(auth_json(basic.host, BASIC_USER, BASIC_PASSWORD))
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:90", f"{basic.host}/org/cache",
                    env={"REGISTRY_AUTH_FILE": str(auth_file)}).json()
    assert_cache_listing(doc, basic)


def test_credentials_from_docker_config(mcvfs, basic):
    docker = mcvfs.home / ".docker"
    docker.mkdir()
    (docker / "config.json").write_text(auth_json(basic.host, BASIC_USER, BASIC_PASSWORD))
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:90", f"{basic.host}/org/cache").json()
    assert_cache_listing(doc, basic)


# -- Bearer token auth -------------------------------------------------------------------------------------

def test_token_auth_with_credentials_reuses_tokens(mcvfs, token):
    issued_before, mark = token.issuer.issued_count, token.registry.mark()
    doc = mcvfs.run("ls", *plain(token), "--json", "--gpu", "cuda:90", f"{token.host}/org/cache").json()
    assert_cache_listing(doc, token)
    issued = token.issuer.issued[issued_before:]
    served = [r for r in token.registry.requests_since(mark) if r.status == 200 and r.uri.startswith("/v2/org/cache/")]
    assert issued and all(i["account"] == TOKEN_USER for i in issued), issued
    assert any("repository:org/cache:pull" in " ".join(i["scopes"]) for i in issued), issued
    # One token serves the tags list and every manifest (and config): one or two at most, not one per request.
    assert len(served) >= 5, served
    assert len(issued) <= 2, (issued, served)


def test_token_auth_anonymous_pull(mcvfs, token):
    issued_before = token.issuer.issued_count
    doc = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:90", f"{token.host}/org/cache").json()
    assert_cache_listing(doc, token)
    assert [i["account"] for i in token.issuer.issued[issued_before:]][:1] == [None]


def test_token_auth_bad_credentials_is_a_clear_error(mcvfs, token):
    refused_before = len(token.issuer.refused)
    r = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--creds", f"{TOKEN_USER}:wrong", f"{token.host}/org/cache")
    assert r.rc == 1, r
    assert any(w in r.error_line.lower() for w in AUTH_WORDS), r
    assert len(token.issuer.refused) > refused_before


def test_invalid_reference_is_an_error_in_the_contract_form(mcvfs):
    r = mcvfs.run("inspect", "--plain-http", "127.0.0.1:5000/Not_Lower/Case:tag")
    assert r.rc == 1, r
    assert "Not_Lower" in r.error_line or "reference" in r.error_line.lower() or "repository" in r.error_line.lower()


def test_debug_logging_keeps_json_on_stdout_clean(mcvfs, anon):
    """--log-level is a common option; whatever it logs goes to stderr, never into the JSON."""
    r = mcvfs.run("inspect", "--plain-http", "--log-level", "debug", "--json", f"{anon.host}/org/cache:cuda-sm90")
    assert r.json()["digest"] == anon.digests[("org/cache", "cuda-sm90")]
    r = mcvfs.run("ls", "--plain-http", "--log-level", "debug", "--gpu", "cuda:90", "--json", f"{anon.host}/org/cache")
    assert {i["tag"] for i in r.json()["images"]} == {"cuda-sm90", "cuda-sm80", "rocm-gfx942"}
