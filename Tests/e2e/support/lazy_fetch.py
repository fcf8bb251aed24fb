"""What the tests of lazy fetching share (prefetch, hot sets, whole layers, convert): a registry of the test's own
(the mount pool is conftest's `mounts`), and the reads and look-ups they make. Import the fixture into a test
module to use it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .images import RegistryAPI
from .registry import Registry

FIXTURE = Path(__file__).resolve().parents[2] / "Fixtures" / "triton-3.9.0" / "cuda-90"


@pytest.fixture
def registry(tmp_path):
    with Registry(tmp_path / "registry") as r:
        yield r


def kernel_dirs(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


def read_kernel(directory: Path) -> None:
    """Reads every file of one `<KEY>/` directory, as Triton loads a kernel."""
    for f in sorted(directory.iterdir()):
        f.read_bytes()


def layer_of(registry: Registry, repo: str, tag: str) -> dict:
    return json.loads(RegistryAPI(registry.host).get_manifest(repo, tag)[0])["layers"][0]
