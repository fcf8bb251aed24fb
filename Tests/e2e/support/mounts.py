"""Real FUSE mounts of mcvfs for the end-to-end tests, real Triton runs against them, and probes run in
subprocesses so a hanging mount can never hang the test run (timeouts there are hang guards, not assertions).

`Mounted` always cleans up: `close()` unmounts (mcvfs unmount, then a lazy fusermount3) and SIGKILLs the daemon
if it is still alive; fixtures call it in their finalizers.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from .mcvfs import Mcvfs
from .reach import reachable
from .registry import require_tool

REPO_ROOT = Path(__file__).resolve().parents[3]
MAKE_CACHE = REPO_ROOT / "scripts" / "make-triton-cache.py"
PYTHON = sys.executable
CUDA = "cuda:90:32"
HIP = "hip:gfx942:64"
# Mount options for tests that count or fault the ranges of lazy reads: what is read, when it is read (a prefetching
# mount fetches a small layer whole, and the rest of a larger one in the background; test_prefetch.py covers that).
ON_DEMAND = ("--prefetch", "none")


def is_mountpoint(path: Path) -> bool:
    path = os.path.abspath(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[4].replace("\\040", " ") == path:
            return True
    return False


def fuse_connection(path: Path) -> str | None:
    """The FUSE connection number (the mount's minor device) of the mount at `path`, if it is one."""
    path = os.path.abspath(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[4].replace("\\040", " ") == path:
            return fields[2].split(":")[1]
    return None


def abort_fuse_connection(number: str | None) -> None:
    """Last resort for a deadlocked daemon (a thread stuck in the kernel keeps the connection alive after
    SIGKILL, and every process touching the mount with it): abort the connection through fusectl."""
    if number is None:
        return
    connections = Path("/sys/fs/fuse/connections")
    if not (connections / number).exists() and os.geteuid() == 0:
        subprocess.run(["mount", "-t", "fusectl", "none", str(connections)], capture_output=True, timeout=30)
    try:
        (connections / number / "abort").write_text("1")
    except OSError:
        pass


def daemon_pids(mountpoint: Path) -> list[int]:
    """The mcvfs daemons serving `mountpoint` (`mcvfs mount ... MNT --foreground` processes)."""
    target = os.path.abspath(mountpoint)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if len(args) > 2 and os.path.basename(args[0]) == "mcvfs" and "mount" in args \
                and any(os.path.abspath(a) == target for a in args[1:] if a.startswith("/")):
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, guard: float = 30) -> None:
    deadline = time.monotonic() + guard
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


class Mounted:
    """`mcvfs mount --plain-http [args] --cache-dir CACHE REF MNT`, in the background (the CLI's default)."""

    def __init__(self, mcvfs: Mcvfs, ref: str, mountpoint: Path, cache_dir: Path, *args: str):
        self.mcvfs = mcvfs
        self.ref = ref
        self.path = Path(mountpoint)
        self.cache_dir = Path(cache_dir)
        self.args = [str(a) for a in args]
        self.pid: int | None = None
        self.result = None

    def start(self, *, check: bool = True) -> "Mounted":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.path)
        except FileExistsError:
            pass  # an existing directory, or the stale mount of a dead daemon (the mount must clear it)
        self.result = self.mcvfs.run("mount", "--plain-http", *self.args, "--cache-dir", str(self.cache_dir),
                                     self.ref, str(self.path), timeout=120)
        if check:
            assert self.result.rc == 0, f"mount failed:\n{self.result}\n{self.daemon_log()}"
            assert "mounted" in self.result.stdout + self.result.stderr, str(self.result)
            pids = daemon_pids(self.path)
            assert len(pids) == 1, f"expected one daemon for {self.path}, found {pids}"
            self.pid = pids[0]
        return self

    def daemon_log(self) -> str:
        logs = sorted((self.cache_dir / "logs").glob("*.log")) if (self.cache_dir / "logs").is_dir() else []
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-4000:]}" for p in logs)

    def status(self) -> dict:
        return json.loads(probe(f"print(open({str(self.path / '.mcvfs' / 'status.json')!r}).read())").stdout)

    def status_measured_after(self, after: float, guard: float = 120) -> dict:
        """The status once its upper sizes come from a measurement that started after `after` (a time.time()):
        the daemon measures uppers in the background, at most every few seconds, and serves the last result. The
        guard is a hang guard only."""
        deadline = time.monotonic() + guard
        while True:
            status = self.status()
            measured = status.get("uppersMeasuredAt")
            # The document's times have whole seconds: a measurement stamped in `after`'s second may precede it.
            if measured and datetime.fromisoformat(measured.replace("Z", "+00:00")).timestamp() >= math.ceil(after):
                return status
            assert time.monotonic() < deadline, f"no measurement of the uppers after {after} within {guard}s"
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the daemon: the mount stays behind, stale (ENOTCONN)."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        wait_gone(self.pid)

    def unmount(self) -> None:
        r = self.mcvfs.run("unmount", str(self.path), timeout=60)
        assert r.rc == 0, f"unmount failed:\n{r}"
        assert not is_mountpoint(self.path)
        if self.pid is not None:
            wait_gone(self.pid)
            assert not _alive(self.pid), "the daemon outlived its unmount"
        self.pid = None

    def close(self) -> None:
        """Finalizer: whatever happened, leave no mount and no daemon behind."""
        connection = fuse_connection(self.path)
        if is_mountpoint(self.path):
            self.mcvfs.run("unmount", str(self.path), timeout=60)
        if is_mountpoint(self.path):
            subprocess.run([require_tool("fusermount3"), "-u", "-z", str(self.path)], capture_output=True, timeout=60)
        for pid in {*(daemon_pids(self.path)), *([self.pid] if self.pid else [])}:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_gone(pid, guard=10)
                if _alive(pid):  # a daemon thread deadlocked in the kernel: only an abort frees it
                    abort_fuse_connection(connection)
                    wait_gone(pid)
        self.pid = None


class MountPool:
    """What a fixture hands out: `mount(...)` starts one; `close()` (the finalizer) cleans up all of them."""

    def __init__(self, mcvfs: Mcvfs):
        self.mcvfs = mcvfs
        self.mounts: list[Mounted] = []

    def mount(self, ref: str, mountpoint: Path, cache_dir: Path, *args: str, check: bool = True) -> Mounted:
        m = Mounted(self.mcvfs, ref, mountpoint, cache_dir, *args)
        self.mounts.append(m)
        return m.start(check=check)

    def close(self) -> None:
        for m in reversed(self.mounts):
            m.close()


def run_guarded(argv: list[str], *, timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a hang guard that cannot itself hang: a process stuck in the kernel on a deadlocked
    mount survives SIGKILL until the mount's connection is aborted (the fixture finalizer does that)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                         **kw)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = "", "(still stuck in the kernel after SIGKILL)"
        raise AssertionError(f"{what} hung past its {timeout}s guard (the mount must answer, never hang):\n"
                             f"{' '.join(argv)}\nstdout: {out[-3000:]}\nstderr: {err[-3000:]}") from None
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


# -- probes in subprocesses ------------------------------------------------------------------------------------

PROBE_PRELUDE = """
import errno, json, os, sys
def attempt(f, *a):
    try:
        v = f(*a)
        return ["ok", v if isinstance(v, (str, int, list, bool, type(None))) else None]
    except OSError as e:
        return ["err", errno.errorcode.get(e.errno, str(e.errno))]
"""


def probe(code: str, *, timeout: float = 120, user: int | None = None, env: dict | None = None,
          check: bool = True, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Runs Python `code` in a fresh process (optionally as another uid). The timeout is a hang guard."""
    argv = [PYTHON, "-c", PROBE_PRELUDE + code]
    if user is not None:
        argv = [require_tool("setpriv"), f"--reuid={user}", f"--regid={user}", "--clear-groups", reachable(PYTHON),
                *argv[1:]]
    out = run_guarded(argv, timeout=timeout, what=f"probe\n{code}\n", env={**os.environ, **(env or {})},
                      cwd=cwd or "/")
    if check:
        assert out.returncode == 0, f"probe failed ({out.returncode}):\n{code}\n{out.stdout}\n{out.stderr}"
    return out


def probe_json(code: str, **kw):
    out = probe(code, **kw)
    return json.loads(out.stdout.strip().splitlines()[-1])


def access_errno(path: Path, *, op: str = "listdir", timeout: float = 120) -> str:
    """'ok' or the errno name an access of `path` gives, in a subprocess."""
    fn = {"listdir": "os.listdir", "stat": "os.stat", "lstat": "os.lstat", "read": "lambda p: open(p,'rb').read()"}[op]
    r = probe_json(f"print(json.dumps(attempt({fn}, {str(path)!r})))", timeout=timeout)
    return "ok" if r[0] == "ok" else r[1]


# -- real Triton ----------------------------------------------------------------------------------------------

def run_triton(cache_dir: Path, target: str, *, kernels: str, matmul_configs: int = 1, home: Path,
               user: int | None = None, out: bool = False, timeout: float = 300) -> tuple[list[dict], dict]:
    """scripts/make-triton-cache.py in a fresh process with TRITON_CACHE_DIR=cache_dir (or --out when `out`),
    from a cwd outside the cache. Returns (per-kernel lines, summary)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(home, user, user)
    argv = [PYTHON, str(MAKE_CACHE), "--target", target, "--kernels", kernels, "--matmul-configs", str(matmul_configs)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
    env.update({"HOME": str(home), "TRITON_HOME": str(home)})
    if out:
        argv += ["--out", str(cache_dir)]
    else:
        env["TRITON_CACHE_DIR"] = str(cache_dir)
    if user is not None:
        argv = [require_tool("setpriv"), f"--reuid={user}", f"--regid={user}", "--clear-groups", reachable(PYTHON),
                reachable(MAKE_CACHE), *argv[2:]]
    r = run_guarded(argv, timeout=timeout, what=f"Triton on {cache_dir}", env=env, cwd=str(home))
    assert r.returncode == 0, f"Triton run failed ({r.returncode}) on {cache_dir}:\n{r.stdout}\n{r.stderr[-6000:]}"
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    return lines[:-1], lines[-1]


def kernel_dirs(cache: Path) -> dict[str, str]:
    """KEY -> kernel name, for the kernel entries (those with a `<name>.json` naming a target)."""
    out = {}
    for meta in sorted(Path(cache).glob("*/*.json")):
        if meta.name.startswith("__grp__"):
            continue
        if isinstance(json.loads(meta.read_text()).get("target"), dict):
            out[meta.parent.name] = meta.stem
    return out


def compile_foreign(root: Path, name: str, target: str, kernels: str, matmul_configs: int) -> Path:
    """Compiles real kernels under a build path, keeps a copy elsewhere and deletes the build path: the group
    files then name a directory that does not exist, as on any machine that pulls the cache."""
    build = root / "foreign" / f"opt-build-{name}" / ".triton" / "cache"
    lines, summary = run_triton(build, target, kernels=kernels, matmul_configs=matmul_configs,
                                home=root / f"home-{name}", out=True)
    assert summary["kernels"] == len(lines) and summary["hits"] == 0, summary
    src = root / f"src-{name}"
    shutil.copytree(build, src, symlinks=True)
    shutil.rmtree(root / "foreign" / f"opt-build-{name}")
    return src
