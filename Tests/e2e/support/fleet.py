"""A simulated fleet on one machine for the publish, refresh and compaction tests: one real registry holding an
MCV cache image (umoci + skopeo, as third parties push), nodes that are real `mcvfs mount` daemons with cache
directories of their own, and real Triton compiling distinct vector-add kernels (`compile_kernels.py`, one cache
key per BLOCK size) for cuda:90 on a machine without a GPU."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .images import RegistryAPI, build_mcv_layout, skopeo_push
from .mcvfs import Mcvfs, Result
from .mounts import CUDA, MountPool, Mounted, run_guarded
from .registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
COMPILE = Path(__file__).with_name("compile_kernels.py")
PYTHON = sys.executable
REPO = "fleet/cache"
# The password of every key the fleet tests make.
PASSWORD = "fleet-secret"


def compile_kernels(cache_dir: Path, blocks: list[int], *, home: Path, timeout: float = 300) -> tuple[list[dict], dict]:
    """Real Triton, in a fresh process, with TRITON_CACHE_DIR=cache_dir. Returns (per-kernel lines, summary)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env.update({"HOME": str(home), "TRITON_HOME": str(home), "TRITON_CACHE_DIR": str(cache_dir)})
    argv = [PYTHON, str(COMPILE), "--target", CUDA, "--blocks", ",".join(map(str, blocks))]
    r = run_guarded(argv, timeout=timeout, what=f"Triton on {cache_dir}", env=env, cwd=str(home))
    assert r.returncode == 0, f"Triton failed ({r.returncode}) on {cache_dir}:\n{r.stdout}\n{r.stderr[-6000:]}"
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return lines[:-1], lines[-1]


def wait_for(predicate, *, guard: float, what: str, interval: float = 0.1):
    """Polls until predicate() returns something truthy and returns it. The guard is a hang guard with generous
    slack, never an assertion about speed."""
    deadline = time.monotonic() + guard
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {guard}s"
        time.sleep(interval)


@dataclass
class Node:
    """One node: a mount daemon with its own cache directory (and so its own uppers, ledger and blob cache)."""
    name: str
    mount: Mounted
    home: Path

    @property
    def path(self) -> Path:
        return self.mount.path

    @property
    def cache(self) -> Path:
        return self.mount.cache_dir

    def status(self) -> dict:
        return self.mount.status()

    def refresh(self) -> dict:
        return self.status()["service"]["refresh"]

    def compile(self, blocks: list[int], run: str = "run") -> tuple[list[dict], dict]:
        return compile_kernels(self.path, blocks, home=self.home / f"triton-{run}-{time.monotonic_ns()}")

    def publish(self, *args: str, to: str | None = None, env: dict[str, str] | None = None,
                timeout: float = 180) -> Result:
        """`mcvfs publish` of this node's mount to `to` (default: the repository it mounts)."""
        return self.mount.mcvfs.run("publish", "--plain-http", "--cache-dir", str(self.cache), *args,
                                    str(self.path), to or self.mount.ref, env=env, timeout=timeout)

    def upper_keys(self, uid: int = 0) -> set[str]:
        """The kernel directories this node's own Triton wrote (its upper holds a <KEY>/ with files)."""
        uppers = list((self.cache / "upper").glob(f"*/{uid}"))
        if not uppers:
            return set()
        return {p.name for p in uppers[0].iterdir() if p.is_dir() and not p.name.startswith(".") and any(p.iterdir())}

    def wait_refreshed_with(self, tag: str, guard: float = 60) -> dict:
        """The refresh status once a refresh added the image under `tag`."""
        def added():
            status = self.status()  # one document: the refresh's report and the images it added agree
            return status["service"]["refresh"] if tag in {u["name"] for u in status["used"]} else None
        return wait_for(added, guard=guard, what=f"{self.name} to add {tag} in a refresh")


@dataclass
class Fleet:
    """A registry with the base image at `REPO:cuda-sm90` and nodes mounted on the repository."""
    registry: Registry
    root: Path
    mcvfs: Mcvfs
    pool: MountPool
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def repo(self) -> str:
        return f"{self.registry.host}/{REPO}"

    def api(self) -> RegistryAPI:
        return RegistryAPI(self.registry.host)

    def node(self, name: str, *args: str, gpu: str = "cuda:90") -> Node:
        mount = self.pool.mount(self.repo, self.root / f"mnt-{name}", self.root / f"cache-{name}", "--gpu", gpu, *args)
        node = Node(name, mount, self.root / f"home-{name}")
        self.nodes[name] = node
        return node

    def fleet_tags(self) -> list[str]:
        return sorted(t for t in self.api().tags(REPO) if t.startswith("fleet-"))

    def run(self, *args: str, timeout: float = 180) -> Result:
        return self.mcvfs.run(*args, timeout=timeout)


def start_fleet(root: Path) -> Fleet:
    """A registry (deletion enabled, as compaction needs) with the bundled cuda-90 cache pushed as MCV does."""
    registry = Registry(root / "registry").start()
    layout = build_mcv_layout(FIXTURE, root / "base", tag="cuda-sm90")
    skopeo_push(layout, registry.host, REPO, "cuda-sm90")
    mcvfs = Mcvfs(root / "cli-home")
    return Fleet(registry, root, mcvfs, MountPool(mcvfs))


def stop_fleet(fleet: Fleet) -> None:
    fleet.pool.close()
    fleet.registry.stop()


def key_pair(mcvfs: Mcvfs, directory: Path, password: str = PASSWORD) -> tuple[Path, Path]:
    """`mcvfs generate-key-pair` in `directory`: (cosign.key, cosign.pub)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = run_guarded([mcvfs.binary, "generate-key-pair"], timeout=60, what="generate-key-pair",
                      env={**mcvfs.env, "COSIGN_PASSWORD": password}, cwd=str(directory))
    assert out.returncode == 0, out.stderr
    return directory / "cosign.key", directory / "cosign.pub"


@pytest.fixture
def fleet(tmp_path):
    """A fleet of the test's own (tests import this fixture by name)."""
    f = start_fleet(tmp_path)
    yield f
    stop_fleet(f)


def pushed(result: Result) -> list[tuple[str, str]]:
    """(digest, reference) of each image a `publish` or `compact` printed as pushed."""
    assert result.rc == 0, str(result)
    return [tuple(line.split("\t")) for line in result.stdout.splitlines() if line.startswith("sha256:")]


def published_tag(result: Result) -> str:
    """The tag of the one image a `publish` or `compact` pushed."""
    images = pushed(result)
    assert len(images) == 1, str(result)
    return images[0][1].rsplit(":", 1)[1]
