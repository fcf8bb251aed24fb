"""Fixtures for the integration and end-to-end tests: real registries (anonymous, Basic, Bearer token) populated
once per session with MCV-layout cache images built by umoci and pushed by skopeo or the registry API, and an
isolated `mcvfs` runner. Run through scripts/test, which exports MCVFS_BIN."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.images import (  # noqa: E402
    OCI_INDEX, OCI_LAYER_TAR, Layout, RegistryAPI, build_mcv_layout, build_plain_layout,
    hostile_tar, mcv_labels, sha256_digest, skopeo_push, stage_mcv_tree, tar_of_tree, zstd_layout,
)
from support.mcvfs import Mcvfs, mcvfs_bin  # noqa: E402
from support.mounts import MountPool  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.tls import make_server_cert  # noqa: E402
from support.token_issuer import TokenIssuer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0"
BASIC_USER, BASIC_PASSWORD = "alice", "s3cret-basic"
TOKEN_USER, TOKEN_PASSWORD = "bob", "s3cret-token"
TAG_COUNT = 120


def pytest_sessionstart(session):
    mcvfs_bin()  # fail the whole run at once, with the reason, when the binary is missing


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a failed one here: a missing prerequisite must never pass silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, which this suite counts as a failure: {report.longrepr}"


@dataclass
class Layouts:
    cuda90: Layout
    cuda80: Layout
    hip942: Layout
    cuda90_zstd: Layout
    plain: Layout
    cuda90_dir: Path = FIXTURES / "cuda-90"
    cuda80_dir: Path = FIXTURES / "cuda-80"
    hip942_dir: Path = FIXTURES / "hip-gfx942"


@pytest.fixture(scope="session")
def layouts(tmp_path_factory) -> Layouts:
    root = tmp_path_factory.mktemp("layouts")
    cuda90 = build_mcv_layout(FIXTURES / "cuda-90", root / "cuda-90", tag="cuda-sm90")
    return Layouts(
        cuda90=cuda90,
        cuda80=build_mcv_layout(FIXTURES / "cuda-80", root / "cuda-80", tag="cuda-sm80"),
        hip942=build_mcv_layout(FIXTURES / "hip-gfx942", root / "hip-gfx942", tag="rocm-gfx942"),
        cuda90_zstd=zstd_layout(cuda90, root / "cuda-90"),
        plain=build_plain_layout(root / "plain", tag="plain"),
    )


@dataclass
class Populated:
    """A registry and what the session pushed into it: digests[(repo, tag)] = manifest digest."""
    registry: Registry
    creds: str | None = None
    digests: dict[tuple[str, str], str] = field(default_factory=dict)
    issuer: TokenIssuer | None = None
    hostile_layer: str | None = None

    @property
    def host(self) -> str:
        return self.registry.host

    def api(self) -> RegistryAPI:
        return RegistryAPI(self.host, creds=self.creds)


def push_cache_repo(pop: Populated, layouts: Layouts, repo: str = "org/cache") -> None:
    """The usual repository: one tag per target, as MCV users publish."""
    for layout in (layouts.cuda90, layouts.cuda80, layouts.hip942):
        pop.digests[(repo, layout.tag)] = skopeo_push(layout, pop.host, repo, layout.tag, creds=pop.creds)


@pytest.fixture(scope="session")
def anon(tmp_path_factory, layouts) -> Populated:
    """Anonymous registry. org/cache: three cache tags, a label-less image, cosign-like tags.
    org/formats: the same cache as OCI gzip, Docker schema2, zstd, uncompressed tar, and an OCI index.
    org/many: one image under 120 tags."""
    with Registry(tmp_path_factory.mktemp("registry-anon")) as registry:
        pop = Populated(registry)
        push_cache_repo(pop, layouts)
        api = pop.api()
        pop.digests[("org/cache", "plain")] = skopeo_push(layouts.plain, pop.host, "org/cache", "plain")
        sm90 = pop.digests[("org/cache", "cuda-sm90")]
        for suffix in ("sig", "att", "sbom"):
            tag = api.push_cosign_like("org/cache", sm90, suffix)
            pop.digests[("org/cache", tag)] = api.get_manifest("org/cache", tag)[2]

        f = "org/formats"
        pop.digests[(f, "oci")] = skopeo_push(layouts.cuda90, pop.host, f, "oci")
        pop.digests[(f, "docker")] = skopeo_push(layouts.cuda90, pop.host, f, "docker", fmt="v2s2")
        pop.digests[(f, "zstd")] = skopeo_push(layouts.cuda90_zstd, pop.host, f, "zstd")
        pop.digests[(f, "rocm")] = skopeo_push(layouts.hip942, pop.host, f, "rocm")
        # Uncompressed layer (buildah's default media type): skopeo always compresses for a registry, so push
        # through the API.
        tree = stage_mcv_tree(layouts.cuda90_dir, tmp_path_factory.mktemp("tar-tree"))
        layer = tar_of_tree(tree)
        pop.digests[(f, "tar")] = api.push_image(f, "tar", [(layer, OCI_LAYER_TAR)],
                                                 labels=mcv_labels(layouts.cuda90_dir),
                                                 uncompressed_layers=[layer])["digest"]
        index = []
        for tag in ("oci", "rocm"):
            body, media_type, digest = api.get_manifest(f, tag)
            index.append({"mediaType": media_type, "digest": digest, "size": len(body),
                          "platform": {"architecture": "amd64", "os": "linux"}})
        pop.digests[(f, "multi")] = api.push_index(f, "multi", index, OCI_INDEX)

        # A hostile publisher's layer (traversal, absolute names, escaping links, a device) with honest labels.
        hostile = hostile_tar()
        pop.digests[("org/hostile", "cuda-sm90")] = api.push_image(
            "org/hostile", "cuda-sm90", [(hostile, OCI_LAYER_TAR)], labels=mcv_labels(layouts.cuda90_dir),
            uncompressed_layers=[hostile])["digest"]
        pop.hostile_layer = sha256_digest(hostile)

        body, media_type, digest = api.get_manifest("org/cache", "cuda-sm80")
        for blob in [layouts.cuda80.manifest()["config"], *layouts.cuda80.manifest()["layers"]]:
            api.push_blob("org/many", layouts.cuda80.blob(blob["digest"]))
        for i in range(TAG_COUNT):
            api.push_manifest("org/many", f"v{i:03d}", body, media_type)
        pop.digests[("org/many", "*")] = digest
        yield pop


@pytest.fixture(scope="session")
def basic(tmp_path_factory, layouts) -> Populated:
    """htpasswd (Basic) registry with org/cache pushed by skopeo with credentials."""
    with Registry(tmp_path_factory.mktemp("registry-basic"), basic_users={BASIC_USER: BASIC_PASSWORD}) as registry:
        pop = Populated(registry, creds=f"{BASIC_USER}:{BASIC_PASSWORD}")
        push_cache_repo(pop, layouts)
        yield pop


def start_token_registry(workdir: Path, layouts: Layouts, **issuer_options):
    issuer = TokenIssuer(workdir / "issuer", users={TOKEN_USER: TOKEN_PASSWORD}, **issuer_options).start()
    registry = Registry(workdir / "registry", token_issuer=issuer).start()
    pop = Populated(registry, creds=f"{TOKEN_USER}:{TOKEN_PASSWORD}", issuer=issuer)
    push_cache_repo(pop, layouts)
    return pop


def stop_token_registry(pop: Populated) -> None:
    pop.registry.stop()
    pop.issuer.stop()


@pytest.fixture(scope="session")
def token(tmp_path_factory, layouts) -> Populated:
    """Bearer token registry (auth: token) with a test issuer; anonymous pull allowed, push needs credentials."""
    pop = start_token_registry(tmp_path_factory.mktemp("registry-token"), layouts)
    yield pop
    stop_token_registry(pop)


@pytest.fixture
def fresh_registry(tmp_path, layouts):
    """A registry of the test's own (for tests that corrupt storage): org/cache as usual."""
    with Registry(tmp_path / "registry") as registry:
        pop = Populated(registry)
        push_cache_repo(pop, layouts)
        yield pop


@pytest.fixture
def mcvfs(tmp_path) -> Mcvfs:
    return Mcvfs(tmp_path / "home")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


@pytest.fixture
def mounts(tmp_path):
    """Mounts made through it are unmounted (and their daemons reaped) when the test ends."""
    pool = MountPool(Mcvfs(tmp_path / "home"))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, layouts):
    """A registry that serves HTTPS only, with the cache repository, and the certificate it presents."""
    workdir = tmp_path_factory.mktemp("registry-tls")
    cert = make_server_cert(workdir / "pki")
    with Registry(workdir / "registry", tls=cert) as registry:
        pop = Populated(registry)
        push_cache_repo(pop, layouts)
        yield pop, cert
