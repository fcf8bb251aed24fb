"""Paths another uid can reach, for what the tests run as another user (65534, a pod's uid) with setpriv.

A clone in a 0700 directory (root's home on Debian) holds the built binary, the venv and the scripts where no
other uid can open them (`EACCES` on exec). `reachable(path)` answers a path to the same file that every uid can
reach: the path itself when every directory above it is searchable by all; else, for a path in the repository,
the same path under a read-only bind mount of the repository made once per session in a 0755 directory (a bind
mount and not a copy: the venv holds Triton, too big to copy per run); else a copy of the file there.
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

from .registry import require_tool

REPO_ROOT = Path(__file__).resolve().parents[3]

_lock = threading.Lock()
_shared: Path | None = None
_checked: dict[tuple[str, int], bool] = {}


def is_reachable(path: str | os.PathLike, uid: int = 65534) -> bool:
    """Whether `uid` can open `path` as given (every directory on the way, symlinks included), and execute it when
    it is executable for its owner: asked of the kernel as that uid, since a venv's interpreter must be run by
    the path that names the venv, not by the file it resolves to."""
    key = (os.fspath(path), uid)
    if key not in _checked:
        mode = os.stat(path).st_mode
        test = "-x" if mode & stat.S_IXUSR else "-r"
        argv = [require_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "test", test,
                os.fspath(path)]
        _checked[key] = subprocess.run(argv, capture_output=True).returncode == 0
    return _checked[key]


def reachable(path: str | os.PathLike) -> str:
    """`path`, or a path to the same file that every uid can reach (see the module's docstring)."""
    if is_reachable(path):
        return str(path)
    shared = _shared_directory()
    absolute = Path(os.path.abspath(path))
    if absolute.is_relative_to(REPO_ROOT):
        candidate = shared / "repo" / absolute.relative_to(REPO_ROOT)
        if is_reachable(candidate):
            return str(candidate)
    copy = shared / "files" / absolute.relative_to(absolute.anchor)
    with _lock:
        if not copy.exists():
            directory = shared
            for part in copy.parent.relative_to(shared).parts:
                directory = directory / part
                directory.mkdir(mode=0o755, exist_ok=True)
                os.chmod(directory, 0o755)
            shutil.copy2(os.path.realpath(absolute), copy)
            os.chmod(copy, 0o755 if os.stat(copy).st_mode & stat.S_IXUSR else 0o644)
    return str(copy)


def _shared_directory() -> Path:
    """A 0755 directory holding `repo` (the repository, bind-mounted read-only) and `files` (copies); removed,
    and the bind mount detached, when the test session ends."""
    global _shared
    with _lock:
        if _shared is not None:
            return _shared
        shared = Path(tempfile.mkdtemp(prefix="mcvfs-reach-", dir="/tmp"))
        os.chmod(shared, 0o755)
        repo = shared / "repo"
        repo.mkdir(mode=0o755)
        subprocess.run(["mount", "--bind", str(REPO_ROOT), str(repo)], check=True)
        atexit.register(_remove, shared)
        # Read-only, so nothing run through it (or a cleanup that misses the unmount) can change the clone.
        subprocess.run(["mount", "-o", "remount,bind,ro", str(repo)], check=True)
        _shared = shared
        return shared


def _remove(shared: Path) -> None:
    subprocess.run(["umount", "--lazy", str(shared / "repo")], check=False, capture_output=True)
    shutil.rmtree(shared, ignore_errors=True)
