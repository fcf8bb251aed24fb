"""A stand-in for systemd running `mcvfs@NAME.service`, for machines without a running systemd (these test
machines have none). It reads the unit file as written and the instance's EnvironmentFile, and does what systemd
does with the settings the unit uses, no more:

- Exec lines with systemd's expansion: `${VAR}` is one word, a `$VAR` word splits on whitespace, `$MAINPID`
  is the main process, `%i` the instance; a leading `-` ignores the command's failure.
- Type=notify: NOTIFY_SOCKET for every command; READY=1 ends the start, MAINPID= moves the main process
  (NotifyAccess=all accepts it from any process of the service), STOPPING=1 is recorded.
- Restart=on-failure after RestartSec when the main process dies other than by a clean exit (ExecStopPost runs
  first), ExecReload for `reload`, ExecStop then SIGTERM to the main process (KillMode=mixed) for `stop`.

It cannot see exit codes of processes it did not start (a main process named by MAINPID): their death counts
as a failure, as it would for systemd seeing them die by a signal. Timeouts are hang guards."""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .mounts import _alive

GUARD = 120
alive = _alive  # a process that exists and is not a zombie


def unit_settings(text: str) -> dict[str, list[str]]:
    """A unit file's settings: key -> values in order (a key may repeat, as Exec lines do)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def seconds(value: str) -> float:
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s|min)?", value.strip())
    assert m, f"unsupported time span {value!r}"
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[m.group(2)]


@dataclass
class Notification:
    at: float
    fields: dict[str, str]


@dataclass
class Supervisor:
    """One instance of the unit. `binary` replaces /usr/local/bin/mcvfs in Exec lines (the unit names the
    installed path)."""
    unit: Path
    instance: str
    environment_file: Path
    binary: str
    workdir: Path
    base_env: dict[str, str]
    main_pid: int | None = None
    notifications: list[Notification] = field(default_factory=list)
    restarts: int = 0
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.settings = unit_settings(self.unit.read_text())
        assert self.settings["Type"] == ["notify"] and self.settings["NotifyAccess"] == ["all"], self.settings
        self.socket_path = str(self.workdir / f"notify-{self.instance}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.socket_path)
        self.sock.settimeout(0.1)
        self._stopping = False
        self._closed = False
        self._lock = threading.Lock()
        self._children: list[subprocess.Popen] = []
        self._main: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()
        self._watcher: threading.Thread | None = None

    # -- the unit's environment and command lines --------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = dict(self.base_env)
        for assignment in self.settings.get("Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = value
        for line in self.environment_file.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value
        env["NOTIFY_SOCKET"] = self.socket_path
        if self.main_pid:
            env["MAINPID"] = str(self.main_pid)
        return env

    def expand(self, line: str) -> tuple[list[str], bool]:
        """A command line as systemd would run it, and whether its failure is ignored."""
        env = self.environment()
        ignore = line.startswith("-")
        words = []
        for word in shlex.split(line.lstrip("-").replace("%i", self.instance)):
            if re.fullmatch(r"\$\w+", word):
                words += env.get(word[1:], "").split()
            else:
                words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
        words = [self.binary if w == "/usr/local/bin/mcvfs" else w for w in words]
        return words, ignore

    def _run(self, key: str) -> None:
        for line in self.settings.get(key, []):
            argv, ignore = self.expand(line)
            out = subprocess.run(argv, capture_output=True, text=True, env=self.environment(), timeout=GUARD,
                                 stdin=subprocess.DEVNULL)
            self.log.append(f"{key}: {' '.join(argv)} -> {out.returncode}\n{out.stdout}{out.stderr}")
            assert ignore or out.returncode == 0, f"{key} failed:\n{self.log[-1]}"

    # -- notifications ---------------------------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._closed:
            self._receive(block=True)

    def _receive(self, *, block: bool) -> None:
        """Handles queued notifications. systemd handles notifications before the death of a process (its
        notify event source has the higher priority), so a MAINPID= sent before the old main exits counts."""
        with self._lock:
            while True:
                try:
                    data = self.sock.recv(65536, 0 if block else socket.MSG_DONTWAIT).decode()
                except (socket.timeout, BlockingIOError, OSError):
                    return
                fields = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
                self.notifications.append(Notification(time.monotonic(), fields))
                if "MAINPID" in fields:
                    self.main_pid = int(fields["MAINPID"])
                if fields.get("READY") == "1":
                    self._ready.set()
                block = False

    def since(self, t: float) -> list[dict[str, str]]:
        with self._lock:
            return [n.fields for n in self.notifications if n.at >= t]

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> int:
        """ExecStartPre, then ExecStart until READY=1. Returns the main pid."""
        self._run("ExecStartPre")
        (line,) = self.settings["ExecStart"]
        argv, _ = self.expand(line)
        self._ready.clear()
        log = open(self.workdir / f"main-{self.instance}-{len(self._children)}.log", "wb")
        proc = subprocess.Popen(argv, env=self.environment(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self._children.append(proc)
        self._main = proc
        self.main_pid = proc.pid
        deadline = time.monotonic() + seconds(self.settings.get("TimeoutStartSec", ["90"])[0])
        while not self._ready.wait(0.05):
            assert proc.poll() is None, f"main process exited ({proc.returncode}) before READY=1"
            assert time.monotonic() < deadline, "no READY=1 within TimeoutStartSec"
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
        return proc.pid

    def _watch(self) -> None:
        try:
            self._restart_on_failure()
        except BaseException as e:  # a failed restart is the test's failure, not a thread's silent death
            self.errors.append(f"restart failed: {e}")

    def _restart_on_failure(self) -> None:
        """Restart=on-failure: a main process that dies while the service is not stopping is restarted."""
        while not self._closed:
            time.sleep(0.01)
            pid = self.main_pid
            if self._stopping or pid is None:
                continue
            main = next((p for p in self._children if p.pid == pid), None)
            if (main.poll() is None) if main is not None else alive(pid):
                continue
            self._receive(block=False)
            if self.main_pid != pid or self._stopping:  # MAINPID moved or a stop began meanwhile
                continue
            if main is not None and main.returncode == 0:  # a clean exit: the service is done
                self.main_pid = None
                continue
            self.log.append(f"main process {pid} died; restarting in {self.settings['RestartSec'][0]}")
            self._run("ExecStopPost")
            time.sleep(seconds(self.settings["RestartSec"][0]))
            self.restarts += 1
            self.start()

    def reload(self) -> None:
        """ExecReload, each line to completion, $MAINPID being the main process when it starts."""
        self._run("ExecReload")

    def stop(self) -> None:
        self._stopping = True
        self._run("ExecStop")
        pid = self.main_pid
        if pid and alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + seconds(self.settings.get("TimeoutStopSec", ["90"])[0])
            while alive(pid) and time.monotonic() < deadline:
                for child in self._children:
                    child.poll()
                time.sleep(0.02)
        self._run("ExecStopPost")
        self.main_pid = None

    def start_again(self) -> int:
        self._stopping = False
        return self.start()

    def close(self) -> None:
        """Finalizer: stop, then kill whatever is left of this service."""
        if not self._closed and self.main_pid and alive(self.main_pid):
            try:
                self.stop()
            except AssertionError:
                pass
        self._closed = True
        for child in self._children:
            if child.poll() is None:
                child.kill()
                child.wait()
        self.sock.close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
