"""eStargz layers made by the reference converter: `ctr-remote image convert --estargz` (stargz-snapshotter), with a
containerd of the test's own as its content store.

containerd runs with a root, a state directory and sockets under a fresh temp directory (no fixed path in /run or
/var, so concurrent runs never share one), and without the CRI plugin; it is stopped when the context ends. The
socket directory is short (`/tmp/ctr-XXXX`): a unix socket path longer than 107 bytes cannot be bound, and pytest's
temp paths can be that long.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from .net import wait_until
from .registry import require_tool


class Containerd:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ctr-"))
        self.socket = self.dir / "c.sock"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Containerd":
        containerd = require_tool("containerd")
        require_tool("ctr-remote")
        config = self.dir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.dir / "root"}"\n'
            f'state = "{self.dir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n')
        self._log = open(self.dir / "containerd.log", "wb")
        self._proc = subprocess.Popen([containerd, "--config", str(config)], stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_until(lambda: self._ready(), timeout=60, what="containerd to serve its socket")
        return self

    def _ready(self) -> bool:
        if self._proc.poll() is not None:
            raise AssertionError(f"containerd exited: {(self.dir / 'containerd.log').read_text()[-3000:]}")
        return self.socket.exists() and self.ctr("version", check=False).returncode == 0

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        # Its snapshot and content dirs may hold read-only files: make them removable first.
        subprocess.run(["chmod", "-R", "u+w", str(self.dir)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["ctr-remote", "--address", str(self.socket), *args], capture_output=True, text=True,
                           timeout=600)
        if check:
            assert r.returncode == 0, f"ctr-remote {' '.join(args)}: {r.stderr[-3000:]}"
        return r

    def convert(self, source: str, dest: str) -> None:
        """Fetches `source` (plain HTTP), converts it with `ctr-remote image convert --estargz --oci` and pushes the
        result as `dest`."""
        self.ctr("content", "fetch", "--plain-http", source)
        self.ctr("image", "convert", "--estargz", "--oci", source, dest)
        self.ctr("image", "push", "--plain-http", dest)
