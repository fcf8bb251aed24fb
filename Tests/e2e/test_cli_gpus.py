"""`mcvfs gpus`: the host's GPU targets as `backend:arch:warp` lines, or a clear error when there are none."""
from __future__ import annotations

import re

TARGET = re.compile(r"^(cuda:\d+:32|hip:gfx[0-9a-f]+:(32|64))$")


def test_gpus_honours_mcvfs_gpu(mcvfs):
    r = mcvfs.run("gpus", env={"MCVFS_GPU": "cuda:90:32"})
    assert r.rc == 0, r
    assert r.stdout.split() == ["cuda:90:32"], r


def test_gpus_honours_mcvfs_gpu_for_rocm(mcvfs):
    r = mcvfs.run("gpus", env={"MCVFS_GPU": "hip:gfx942:64"})
    assert r.rc == 0, r
    assert r.stdout.split() == ["hip:gfx942:64"], r


def test_gpus_detects_or_says_there_are_none(mcvfs):
    """Machine-dependent by nature: with a GPU each line is a target; without one, exit 1 and say so."""
    r = mcvfs.run("gpus")
    if r.rc == 0:
        lines = r.stdout.split()
        assert lines and all(TARGET.match(l) for l in lines), r
    else:
        assert r.rc == 1, r
        assert r.error_line


def test_ls_uses_the_detected_gpu_when_none_is_given(mcvfs, anon):
    doc = mcvfs.run("ls", "--plain-http", "--json", f"{anon.host}/org/cache",
                    env={"MCVFS_GPU": "hip:gfx942:64"}).json()
    assert {i["tag"]: i["compatible"] for i in doc["images"]} == \
        {"cuda-sm90": False, "cuda-sm80": False, "rocm-gfx942": True}
