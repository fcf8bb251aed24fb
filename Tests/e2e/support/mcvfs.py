"""Runs the built `mcvfs` binary ($MCVFS_BIN) as a subprocess, in an isolated environment."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def mcvfs_bin() -> str:
    """$MCVFS_BIN (scripts/test exports it). A missing binary fails the test; it never skips it."""
    path = os.environ.get("MCVFS_BIN")
    if not path:
        raise RuntimeError("MCVFS_BIN is not set: run the tests with scripts/test, or export MCVFS_BIN="
                           "\"$(swift build --show-bin-path)/mcvfs\"")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"MCVFS_BIN={path} is not an executable file (did swift build run?)")
    return path


@dataclass
class Result:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.argv)}\nrc={self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    __repr__ = __str__

    def json(self):
        assert self.rc == 0, str(self)
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"stdout is not JSON ({e}):\n{self}") from None

    @property
    def error_line(self) -> str:
        """The one `mcvfs: error: ...` line the CLI contract promises on failure."""
        lines = [l for l in self.stderr.splitlines() if l.startswith("mcvfs: error: ")]
        assert len(lines) == 1, f"expected exactly one 'mcvfs: error:' line:\n{self}"
        return lines[0]


class Mcvfs:
    """`run(*args)` runs mcvfs with HOME, XDG_RUNTIME_DIR and the credentials files pointed at a temp dir, so
    nothing on the machine leaks in. `timeout` is a hang guard, never an assertion about speed."""

    def __init__(self, home: Path):
        self.binary = mcvfs_bin()
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "run").mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "MCVFS_GPU", "TRITON_OVERRIDE_ARCH",
                                 "HSA_OVERRIDE_GFX_VERSION", "MCVFS_CACHE_DIR", "http_proxy", "https_proxy", "HTTP_PROXY",
                                 "HTTPS_PROXY", "all_proxy", "ALL_PROXY")}
        self.env.update({"HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.home / "run"),
                         "XDG_CACHE_HOME": str(self.home / ".cache"), "XDG_CONFIG_HOME": str(self.home / ".config"),
                         "NO_PROXY": "*",
                         # Without --cache-dir, mcvfs as root would use /var/lib/mcvfs: keep every run in the temp dir.
                         "MCVFS_CACHE_DIR": str(self.home / "default-cache")})

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *map(str, args)]

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        argv = self.argv(*args)
        merged = {**self.env, **(env or {})}
        try:
            out = subprocess.run(argv, capture_output=True, text=True, env=merged, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"mcvfs hung: no exit within the {timeout}s guard: {' '.join(argv)}\n"
                                 f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
        return Result(argv, out.returncode, out.stdout, out.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL)


def blob_files(cache_dir: Path) -> dict[str, Path]:
    """`<cache-dir>/blobs/sha256/<hex>` files, by digest."""
    root = Path(cache_dir) / "blobs" / "sha256"
    if not root.is_dir():
        return {}
    return {"sha256:" + p.name: p for p in root.iterdir()}


def pack_files(cache_dir: Path) -> dict[str, Path]:
    """`<cache-dir>/packs/sha256/<hex>` files (the unpacked contents of layer <hex>), by layer digest."""
    root = Path(cache_dir) / "packs" / "sha256"
    if not root.is_dir():
        return {}
    return {"sha256:" + p.name: p for p in root.iterdir()}


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() or p.is_symlink())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
