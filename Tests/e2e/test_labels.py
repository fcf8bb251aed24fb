"""Interop with the labels other tools write (issue 17): GKM's MCV adds KServe's `io.kserve.km/*` labels and
`cache.vllm.image/format`, older MCV images use a legacy cache layer type, and `mcvfs push` records the Triton
version of its kernels so that `--triton-version` skips images a node's Triton can never hit.

Third-party images are built with umoci and pushed with skopeo (or the registry API, for a media type skopeo
would rewrite); mounts are real, and the registry's own request log shows what a node downloads."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.images import (
    RegistryAPI, build_mcv_layout, build_umoci_layout, mcv_labels, skopeo_push, stage_mcv_tree,
)
from support.mcvfs import all_files
from support.mounts import MountPool, run_triton
from support.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "Tests" / "Fixtures"
CUDA90 = FIXTURES / "triton-3.9.0" / "cuda-90"
VLLM = FIXTURES / "mcv-examples" / "vllm-cache"
LEGACY_TRITON_LAYER = "application/cache.triton.content.layer.v1+triton"
KSERVE_TRITON = {"io.kserve.km/framework": "triton", "io.kserve.km/cache-type": "triton",
                 "io.kserve.km/cache-mount-subpath": ".",
                 "io.kserve.km/cache-root-env": "TRITON_CACHE_DIR=/opt/build/cuda-90/.triton/cache"}


def vllm_layout(workdir: Path, labels: dict[str, str]) -> object:
    """MCV's vLLM layout (`io.vllm.cache/` + `io.vllm.manifest/`) with the labels GKM's MCV writes."""
    tree = workdir / "tree"
    shutil.copytree(VLLM, tree / "io.vllm.cache", symlinks=True)
    (tree / "io.vllm.manifest").mkdir(parents=True)
    (tree / "io.vllm.manifest" / "manifest.json").write_text(json.dumps({"vllm": [{"vllmHash": "d4ec7c2a7d"}]}))
    return build_umoci_layout(tree, workdir / "layout", labels=labels, tag="vllm")


@pytest.fixture(scope="module")
def interop(tmp_path_factory):
    """org/interop: images as GKM/KServe tooling publishes them. org/versions: one cache under three Triton
    version claims."""
    root = tmp_path_factory.mktemp("labels")
    with Registry(root / "registry") as registry:
        api = RegistryAPI(registry.host)
        digests = {}
        # 1. A Triton cache with MCV's and KServe's labels (umoci, skopeo).
        kserve = build_mcv_layout(CUDA90, root / "kserve", tag="a-kserve")
        subprocess.run(["umoci", "config", "--image", f"{kserve.path}:{kserve.tag}",
                        *sum((["--config.label", f"{k}={v}"] for k, v in KSERVE_TRITON.items()), [])],
                       check=True, capture_output=True)
        digests["a-kserve"] = skopeo_push(kserve, registry.host, "org/interop", "a-kserve")
        # 2. The same cache as MCV's legacy "oci variant": a tar.gz layer under the legacy media type.
        manifest = kserve.manifest()
        (layer,) = manifest["layers"]
        blob = kserve.blob(layer["digest"])
        digests["b-legacy"] = api.push_image(
            "org/interop", "b-legacy", [(blob, LEGACY_TRITON_LAYER)], labels=mcv_labels(CUDA90),
            uncompressed_layers=[gzip.decompress(blob)])["digest"]
        # 3. A vLLM cache with KServe's serving plan, naming an extra Triton tree.
        vllm = vllm_layout(root / "vllm", {
            "cache.vllm.image/entry-count": "1", "cache.vllm.image/format": "triton",
            "io.kserve.km/framework": "vllm", "io.kserve.km/cache-type": "torch-compile",
            "io.kserve.km/cache-root-env": "VLLM_CACHE_ROOT=/home/kserve/.cache/vllm",
            "io.kserve.km/cache-mount-subpath": "torch_compile_cache", "io.kserve.km/cache-hash": "d4ec7c2a7d",
            "io.kserve.km/cache-mounts": json.dumps([{"subPath": "triton", "absPath": "/tmp/triton",
                                                      "env": "TRITON_CACHE_DIR", "requiresWritable": True}]),
        })
        digests["c-vllm"] = skopeo_push(vllm, registry.host, "org/interop", "c-vllm")
        # 4. A Habana recipe cache: a kernel cache, but not one mcvfs lays out.
        habana_tree = root / "habana" / "tree"
        (habana_tree / "io.habana.cache").mkdir(parents=True)
        (habana_tree / "io.habana.cache" / "recipe.bin").write_bytes(os.urandom(64))
        habana = build_umoci_layout(habana_tree, root / "habana" / "layout", tag="d-habana", labels={
            "cache.habana.image/summary": "{}", "io.kserve.km/framework": "habana",
            "io.kserve.km/cache-type": "habana-recipe",
            "io.kserve.km/cache-root-env": "PT_HPU_RECIPE_CACHE_CONFIG=/home/kserve/.cache/habana,false,8192"})
        digests["d-habana"] = skopeo_push(habana, registry.host, "org/interop", "d-habana")

        # org/versions: the same cache claimed by Triton 3.9.0, by 3.8.0, and by nobody (no label).
        # Each layer differs (its manifest names its tag), so the registry log tells whose layer was fetched.
        for tag, version in (("a-390", "3.9.0"), ("b-380", "3.8.0"), ("c-none", None)):
            tree = stage_mcv_tree(CUDA90, root / tag / "tree")
            manifest_file = tree / "io.triton.manifest" / "manifest.json"
            manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "tag": tag}))
            labels = mcv_labels(CUDA90)
            if version:
                labels["model.cache.image/triton-version"] = version
            layout = build_umoci_layout(tree, root / tag / "layout", labels=labels, tag=tag)
            digests[tag] = skopeo_push(layout, registry.host, "org/versions", tag)
        yield registry, digests


@pytest.fixture
def pool(mcvfs):
    p = MountPool(mcvfs)
    yield p
    p.close()


def layer_requests(registry: Registry, since: int) -> set[str]:
    return {r.uri.rsplit("/", 1)[1] for r in registry.requests_since(since) if "/blobs/" in r.uri and r.method == "GET"}


def test_gkm_and_kserve_images_mount_and_an_unservable_one_is_skipped(interop, pool, tmp_path, mcvfs):
    registry, _ = interop
    ref = f"{registry.host}/org/interop"
    listing = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--json", ref).json()
    images = {i["tag"]: i for i in listing["images"]}
    assert images["a-kserve"]["kinds"] == ["triton"] and images["a-kserve"]["compatible"] is True
    assert images["b-legacy"]["mediaType"] and images["b-legacy"]["compatible"] is True
    assert images["c-vllm"]["kinds"] == ["vllm"]
    skipped = {i["tag"]: i["reason"] for i in listing["skipped"]}
    assert skipped["d-habana"] == "io.kserve.km/framework is habana: not a Triton or vLLM cache"

    consumer_root = "/cache/kernels"
    m = pool.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--consumer-root", consumer_root)
    status = m.status()
    assert [i["name"] for i in status["used"]] == ["a-kserve", "b-legacy", "c-vllm"], status
    assert {i["name"]: i["reason"] for i in status["skipped"]}["d-habana"].startswith("io.kserve.km/framework")
    # The variables consumers set, from the images' kinds and KServe's extra trees, all under the consumer root.
    assert status["environment"] == {"TRITON_CACHE_DIR": consumer_root, "VLLM_CACHE_ROOT": consumer_root}

    # The legacy layer is read like any tar.gz layer: with both Triton images merged, every file is served.
    for path in all_files(CUDA90):
        rel = path.relative_to(CUDA90)
        served = (m.path / rel).read_bytes()
        if rel.name.startswith("__grp__"):
            children = json.loads(served)["child_paths"]
            assert all(p == f"{consumer_root}/{rel.parent}/{c}" for c, p in children.items()), children
        else:
            assert served == path.read_bytes(), rel
    assert (m.path / "torch_compile_cache" / "d4ec7c2a7d").is_dir()


def test_the_legacy_layer_alone_serves_real_triton_hits(interop, pool, tmp_path):
    """MCV's legacy layer type, mounted by digest, serves Triton 3.9.0 its own kernels (hits, not recompiles)."""
    registry, digests = interop
    m = pool.mount(f"{registry.host}/org/interop@{digests['b-legacy']}", tmp_path / "mnt", tmp_path / "cache",
                   "--gpu", "cuda:90")
    assert [i["name"] for i in m.status()["used"]] == [digests["b-legacy"]]
    # The fixture's kernels were compiled by scripts/make-triton-cache.py with these kernels and configs.
    lines, summary = run_triton(m.path, "cuda:90:32", kernels="add,softmax,matmul", matmul_configs=4,
                                home=tmp_path / "home")
    assert summary["hits"] == summary["kernels"] == len(lines) > 0, (lines, summary)


def test_triton_version_selection(interop, pool, tmp_path, mcvfs):
    registry, digests = interop
    ref = f"{registry.host}/org/versions"

    def compatible(*args: str, env: dict | None = None) -> dict[str, bool]:
        out = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--json", *args, ref, env=env).json()
        return {i["tag"]: i["compatible"] for i in out["images"]}

    assert compatible() == {"a-390": True, "b-380": True, "c-none": True}
    assert compatible("--triton-version", "3.9.0") == {"a-390": True, "b-380": False, "c-none": True}
    assert compatible(env={"MCVFS_TRITON_VERSION": "3.8.0"}) == {"a-390": False, "b-380": True, "c-none": True}
    # The option wins over the environment.
    assert compatible("--triton-version", "3.9.0", env={"MCVFS_TRITON_VERSION": "3.8.0"})["a-390"] is True
    listing = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--json", "--triton-version", "3.9.0", ref).json()
    b380 = next(i for i in listing["images"] if i["tag"] == "b-380")
    assert b380["tritonVersions"] == ["3.8.0"]
    assert b380["reason"] == "compiled by Triton 3.8.0, not 3.9.0 (--triton-version)"

    # A mount never downloads the layer of an image its Triton cannot use.
    body, _, _ = RegistryAPI(registry.host).get_manifest("org/versions", "b-380")
    skipped_layers = {layer["digest"] for layer in json.loads(body)["layers"]}
    mark = registry.mark()
    m = pool.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--triton-version", "3.9.0")
    status = m.status()
    assert [i["name"] for i in status["used"]] == ["a-390", "c-none"]
    assert {i["name"] for i in status["skipped"]} == {"b-380"}
    assert sorted(os.listdir(m.path)) == sorted(os.listdir(CUDA90))  # loads the used images
    fetched = layer_requests(registry, mark)
    assert fetched and not skipped_layers & fetched, fetched

    # extract: the same selection.
    out = mcvfs.run("extract", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "cache2"),
                    "--triton-version", "3.8.0", f"{registry.host}/org/versions:a-390", str(tmp_path / "x"))
    # Nothing selected: a warning naming why, as mount and fetch give it (test_newcomer.py), and nothing written.
    assert out.rc == 0 and "compiled by Triton 3.9.0, not 3.8.0" in out.stderr, out
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir()), out


def test_push_writes_kserve_labels_and_the_triton_version(mcvfs, tmp_path):
    with Registry(tmp_path / "registry") as registry:
        out = mcvfs.run("push", "--plain-http", str(CUDA90), f"{registry.host}/org/pushed:cuda-sm90")
        assert out.rc == 0, out
        vllm = mcvfs.run("push", "--plain-http", str(VLLM), f"{registry.host}/org/pushed:vllm")
        assert vllm.rc == 0, vllm

        def labels(tag: str) -> dict[str, str]:
            config = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--config",
                                     f"docker://{registry.host}/org/pushed:{tag}"], check=True,
                                    capture_output=True, text=True).stdout
            return json.loads(config)["config"]["Labels"]

        triton = labels("cuda-sm90")
        assert triton["model.cache.image/triton-version"] == "3.9.0"
        assert triton["io.kserve.km/framework"] == "triton" and triton["io.kserve.km/cache-type"] == "triton"
        assert triton["io.kserve.km/cache-root-env"] == "TRITON_CACHE_DIR=/opt/build/cuda-90/.triton/cache"
        assert triton["io.kserve.km/cache-mount-subpath"] == "."
        v = labels("vllm")
        assert v["io.kserve.km/cache-type"] == "torch-compile" and v["io.kserve.km/framework"] == "vllm"
        assert v["io.kserve.km/cache-root-env"] == "VLLM_CACHE_ROOT=/home/vllm/.cache/vllm"
        assert v["io.kserve.km/cache-mount-subpath"] == "torch_compile_cache"
        assert v["io.kserve.km/cache-hash"] == "d4ec7c2a7d"
        assert v["cache.vllm.image/format"] == "triton"
        # And mcvfs reads back what it wrote.
        listing = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--json", f"{registry.host}/org/pushed").json()
        assert {i["tag"]: i.get("tritonVersions") for i in listing["images"]}["cuda-sm90"] == ["3.9.0"]
