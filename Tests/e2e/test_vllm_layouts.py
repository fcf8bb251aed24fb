"""vLLM's GPU cache layouts (vLLM 0.30+, docs/vllm.md), served and relocated, with real Triton kernels compiled
here for cuda:90 (no GPU needed) at a build path that is then deleted, as on any machine that pulls a cache:

- AOT compile: Triton's cache nested in Inductor's, `torch_aot_compile/<64 hex>/inductor_cache/triton/<device>/
  <KEY>/`, whose group files name the build machine's absolute paths;
- `torch_compile_cache/<10 hex>/rank_0_0/<prefix>/vllm_compile_cache.py`, naming artifacts by absolute path.

Triton, pointed at the nested directory of a mount or of an extraction, must hit every kernel (its own cache-hit
flag); the compile index must name paths under the consumer's root that exist."""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from support.mcvfs import Mcvfs
from support.mounts import compile_foreign, kernel_dirs, run_triton
from support.registry import Registry

AOT_HASH = "7f" * 32
VLLM_HASH = "0a1b2c3d4e"
BUILD_ROOT = "/home/vllm/.cache/vllm"
CUDA = "cuda:90:32"
KERNELS = "add,softmax"


def compile_index(artifact: str) -> str:
    """vllm_compile_cache.py as vLLM writes it: (shape, graph index, compiler) -> (key, absolute path)."""
    path = f"{BUILD_ROOT}/torch_compile_cache/{VLLM_HASH}/rank_0_0/backbone/{artifact}"
    return repr({(None, 0, "inductor_standalone"): ("fxgraph-key", path)}) + "\n"


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-layouts")
    triton = compile_foreign(root, "cuda", CUDA, KERNELS, 1)
    cache = root / "vllm-root"
    nested = cache / "torch_compile_cache" / "torch_aot_compile" / AOT_HASH / "inductor_cache" / "triton" / "0"
    shutil.copytree(triton, nested)
    (nested.parents[2] / "rank_0_0").mkdir()
    (nested.parents[2] / "rank_0_0" / "model").write_bytes(b"aot artifact")
    backbone = cache / "torch_compile_cache" / VLLM_HASH / "rank_0_0" / "backbone"
    backbone.mkdir(parents=True)
    (backbone / "artifact_compile_range_1_8_subgraph_0").write_bytes(b"binary artifact")
    (backbone / "vllm_compile_cache.py").write_text(compile_index("artifact_compile_range_1_8_subgraph_0"))
    (backbone / "cache_key_factors.json").write_text(json.dumps({"env": {}, "config_hash": "x"}))
    with Registry(root / "registry") as registry:
        mcvfs = Mcvfs(root / "home")
        ref = f"{registry.host}/vllm/gpu:cuda-sm90"
        pushed = mcvfs.run("push", "--plain-http", str(cache), ref, timeout=300)
        assert pushed.rc == 0, pushed
        yield {"ref": ref, "cache": cache, "keys": kernel_dirs(triton), "mcvfs": mcvfs,
               "nested": nested.relative_to(cache)}


def assert_served(root: Path, layout: dict, consumer_root: Path, tmp: Path) -> None:
    nested = root / layout["nested"]
    _, summary = run_triton(nested, CUDA, kernels=KERNELS, home=tmp / "triton-home")
    assert summary["kernels"] > 0 and summary["hits"] == summary["kernels"], summary
    for key in layout["keys"]:
        for group in (nested / key).glob("__grp__*.json"):
            for path in json.loads(group.read_text())["child_paths"].values():
                assert path.startswith(f"{consumer_root}/{layout['nested']}/{key}/"), path
    index = root / "torch_compile_cache" / VLLM_HASH / "rank_0_0" / "backbone" / "vllm_compile_cache.py"
    [(_, path)] = ast.literal_eval(index.read_text()).values()
    assert path == f"{consumer_root}/torch_compile_cache/{VLLM_HASH}/rank_0_0/backbone/" \
                   "artifact_compile_range_1_8_subgraph_0", path
    assert (root / Path(path).relative_to(consumer_root)).read_bytes() == b"binary artifact"


def test_gpu_layout_labels_name_both_hashes_and_the_kernels_target(layout):
    labels = layout["mcvfs"].run("inspect", "--plain-http", "--json", layout["ref"]).json()["labels"]
    assert labels["io.kserve.km/cache-hash"] == f"{VLLM_HASH},{AOT_HASH}", labels
    assert json.loads(labels["cache.vllm.image/summary"]) == {"targets": [{"arch": "90", "backend": "cuda",
                                                                           "warp_size": 32}]}
    assert labels["io.kserve.km/cache-root-env"] == f"VLLM_CACHE_ROOT={layout['cache']}"


def test_nested_triton_and_compile_index_are_relocated_through_a_mount(layout, mounts, tmp_path):
    mounted = mounts.mount(layout["ref"], tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    assert_served(mounted.path, layout, mounted.path, tmp_path)


def test_nested_triton_and_compile_index_are_relocated_by_extract(layout, tmp_path):
    out = tmp_path / "extracted"
    r = layout["mcvfs"].run("extract", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "cache"),
                            layout["ref"], str(out), timeout=300)
    assert r.rc == 0, r
    assert_served(out, layout, out, tmp_path)
