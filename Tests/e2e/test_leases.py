"""Every command that fetches holds the cache lease: `cache prune` running beside `fetch` or `extract` never evicts
what they are downloading, indexing or about to read (issue 12).

Real processes against a real registry: a repository of four cache images, each one gzip layer of many distinct
small files (indexing one takes long enough for prunes to land in the middle of it), fetched or extracted while
`mcvfs cache prune --all` runs in a loop beside it. Timeouts are hang guards, never assertions about speed."""
from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from support.images import OCI_LAYER_GZIP, RegistryAPI, mcv_labels, tar_bytes
from support.mcvfs import Mcvfs, blob_files
from support.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0"
IMAGES = 4
FILES_PER_IMAGE = 1500
GUARD = 300  # seconds: a hang guard only


def layer_of_many_files(image: int) -> tuple[bytes, dict[str, bytes]]:
    """A gzip layer in MCV's layout holding FILES_PER_IMAGE distinct files under one Triton key."""
    key = hashlib.sha256(f"key-{image}".encode()).hexdigest()
    files = {f"io.triton.cache/{key}/part-{n:05d}.bin": hashlib.sha256(f"{image}/{n}".encode()).digest() * 64
             for n in range(FILES_PER_IMAGE)}
    members = []
    for name in ("io.triton.cache", f"io.triton.cache/{key}"):
        directory = tarfile.TarInfo(name)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        members.append((directory, None))
    for name, data in files.items():
        file = tarfile.TarInfo(name)
        file.size, file.mode = len(data), 0o644
        members.append((file, data))
    return gzip.compress(tar_bytes(members), mtime=0), files


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """org/many-files: tags img-0..img-3 for cuda:90; returns (registry, layer digests, file digests)."""
    registry = Registry(tmp_path_factory.mktemp("registry-leases")).start()
    api = RegistryAPI(registry.host)
    labels = mcv_labels(FIXTURES / "cuda-90")
    layers, contents = set(), set()
    for image in range(IMAGES):
        layer, files = layer_of_many_files(image)
        pushed = api.push_image("org/many-files", f"img-{image}", [(layer, OCI_LAYER_GZIP)], labels=labels)
        layers |= {l["digest"] for l in pushed["manifest"]["layers"]}
        contents |= {"sha256:" + hashlib.sha256(data).hexdigest() for data in files.values()}
    yield registry, layers, contents
    registry.stop()


def prune_beside(mcvfs: Mcvfs, cache: Path, command: list[str]) -> tuple[object, list[set[str]]]:
    """Runs `command` and `cache prune --all` in a loop until it exits; returns its result and, for each prune that
    finished while the command still ran, the blobs that prune removed."""
    proc = mcvfs.popen(*command)
    removed_while_running: list[set[str]] = []
    try:
        while proc.poll() is None:
            before = set(blob_files(cache))
            pruned = mcvfs.run("cache", "prune", "--all", "--cache-dir", str(cache), timeout=GUARD)
            assert pruned.rc == 0, pruned
            if proc.poll() is None:
                removed_while_running.append(before - set(blob_files(cache)))
        out, err = proc.communicate(timeout=GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return (proc.returncode, out, err), removed_while_running


def assert_no_index_without_its_files(cache: Path) -> None:
    """The janitor's invariant: a persisted layer index only ever names file blobs that are in the store."""
    present = set(blob_files(cache))
    for path in (cache / "index" / "sha256").glob("*.json"):
        index = json.loads(path.read_text())["index"]
        missing = {e["content"] for e in index["entries"] if e.get("content")} - present
        assert not missing, f"{path.name} names {len(missing)} file blob(s) a prune removed"


def test_prune_beside_fetch_never_evicts_what_is_being_fetched(mcvfs, tmp_path, many):
    registry, layers, contents = many
    cache = tmp_path / "cache"
    (rc, out, err), removed = prune_beside(
        mcvfs, cache, ["fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(cache),
                       f"{registry.host}/org/many-files"])
    assert rc == 0, err
    assert len(out.splitlines()) == IMAGES, out
    assert removed, "no prune finished while the fetch ran: the test raced nothing"
    taken = set().union(*removed) & (layers | contents)
    assert not taken, f"prunes beside the fetch removed {len(taken)} of its layer or file blob(s)"
    assert_no_index_without_its_files(cache)


def test_prune_beside_extract_never_evicts_what_it_is_about_to_write(mcvfs, tmp_path, many):
    registry, layers, contents = many
    cache = tmp_path / "cache"
    target = tmp_path / "extracted"
    (rc, out, err), removed = prune_beside(
        mcvfs, cache, ["extract", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(cache),
                       f"{registry.host}/org/many-files", str(target)])
    assert rc == 0, err
    assert removed, "no prune finished while the extract ran: the test raced nothing"
    taken = set().union(*removed) & (layers | contents)
    assert not taken, f"prunes beside the extract removed {len(taken)} of its layer or file blob(s)"
    for image in range(IMAGES):
        for name, data in layer_of_many_files(image)[1].items():
            assert (target / name.removeprefix("io.triton.cache/")).read_bytes() == data, name
    assert_no_index_without_its_files(cache)
