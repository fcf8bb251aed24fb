"""Compile once per fleet, for vLLM (docs/vllm.md): node A's first vLLM start compiles through its mount and A
publishes what it wrote; node B, mounted with --refresh-interval before anything was published, picks the image up
without a remount and its first vLLM start compiles nothing. Two engine starts (about two minutes here)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from support.fleet import Fleet, Node, pushed, published_tag, start_fleet, stop_fleet
from support.mounts import probe_json
from support.vllm_engine import run_vllm, tiny_model


def vllm_node(fleet: Fleet, name: str, *args: str) -> Node:
    return fleet.node(name, *args, gpu="all")


def test_a_vllm_start_compiled_on_one_node_is_warm_on_another_after_its_next_refresh(tmp_path: Path):
    tiny_model()
    fleet = start_fleet(tmp_path)
    try:
        b = vllm_node(fleet, "b", "--refresh-interval", "1")
        a = vllm_node(fleet, "a")
        cold = run_vllm(a.path, home=tmp_path / "vllm-a")
        assert cold.cpp_compiled > 0, "A found compiled kernels in a repository that has none"

        published = a.publish()
        tag = published_tag(published)
        assert tag.startswith("fleet-vllm-cpu-"), published
        labels = fleet.run("inspect", "--plain-http", "--json", f"{fleet.repo}:{tag}").json()["labels"]
        assert labels["model.cache.image/type"] == "vllm" and labels["io.kserve.km/cache-hash"], labels
        # Not the node's staging directory: a fixed root, so nothing of the node's paths leaks to pullers.
        assert labels["io.kserve.km/cache-root-env"] == "VLLM_CACHE_ROOT=/root/.cache/vllm", labels

        b.wait_refreshed_with(tag)
        warm = run_vllm(b.path, home=tmp_path / "vllm-b")
        assert warm.tokens == cold.tokens
        assert warm.cpp_compiled == 0, warm.log[-3000:]

        # What A published is recorded: a second publish pushes nothing; B's own writes (the re-saved AOT
        # artifact, vllm-project/vllm#45447) are of a hash B's image provides, so B publishes nothing either.
        assert pushed(a.publish()) == []
        assert pushed(b.publish()) == []
    finally:
        stop_fleet(fleet)


def test_a_users_vllm_directory_with_a_link_out_is_refused_when_root_publishes_it(tmp_path: Path):
    """An attack: uid 65534 writes a complete-looking AOT directory through the mount whose kernel is a symlink
    to a root-only file. Root publishing that user's upper must refuse the directory, never follow the link."""
    uid = 65534
    fleet = start_fleet(tmp_path)
    shared = Path(tempfile.mkdtemp(prefix="mcvfs-vllm-attack-", dir="/tmp"))
    os.chmod(shared, 0o755)
    secret = shared / "secret"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    try:
        a = fleet.pool.mount(fleet.repo, shared / "mnt", shared / "cache", "--gpu", "all")
        hash_dir = a.path / "torch_compile_cache" / "torch_aot_compile" / ("e5" * 32)
        planted = probe_json(f"""
root = {str(hash_dir)!r}
os.makedirs(root + "/rank_0_0"); os.makedirs(root + "/inductor_cache/ab")
open(root + "/rank_0_0/model", "wb").write(b"artifact")
print(json.dumps(attempt(os.symlink, {str(secret)!r}, root + "/inductor_cache/ab/cab.so")))""", user=uid)
        assert planted == ["ok", None], planted
        report = fleet.mcvfs.run("publish", "--plain-http", "--cache-dir", str(shared / "pub-cache"), "--json",
                                 "--from-uid", str(uid), str(a.path), fleet.repo).json()
        assert report["images"] == [], report
        assert any("inductor_cache/ab/cab.so is not a regular file" in s["reason"] for s in report["skipped"]), report
    finally:
        fleet.pool.close()
        stop_fleet(fleet)
        shutil.rmtree(shared, ignore_errors=True)
