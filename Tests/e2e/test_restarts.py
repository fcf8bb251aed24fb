"""Restarts a consumer survives, with the daemon run as systemd runs mcvfs@.service (support/supervisor.py reads
the unit and stands in for systemd, which these machines do not run): a daemon killed with SIGKILL is restarted
and replaces its stale mount from beneath; `systemctl reload` replaces a live daemon without a failed lookup;
`systemctl restart` is stop-then-start, and what consumers see meanwhile is measured and checked as documented.

The consumer is a probe process looking a kernel up every 5 ms (as Triton does: the key's directory, its group
file, each child the group file names) and, after each restart, a real Triton run that must hit every kernel.
Time bounds bound fault handling (generously), never speed; measured windows are printed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.mcvfs import mcvfs_bin
from support.mounts import is_mountpoint, run_triton
from support.registry import Registry
from support.supervisor import Supervisor, alive

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
PROBE = REPO_ROOT / "Tests" / "e2e" / "support" / "probe.py"
KEY = "3PTOANQEQTSA6SMXSRQSEKSNTIQYFJIP37QGU5JTYHLWOCHFGMCQ"
GUARD = 120


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The fixture cache, signed: the unit verifies signatures by default (MCVFS_TRUST)."""
    keys = tmp_path_factory.mktemp("restart-keys")
    env = {**os.environ, "COSIGN_PASSWORD": "pw"}
    out = subprocess.run([mcvfs_bin(), "generate-key-pair"], capture_output=True, text=True, timeout=GUARD, env=env,
                         cwd=keys)
    assert out.returncode == 0, out.stderr
    with Registry(tmp_path_factory.mktemp("restart-registry")) as r:
        out = subprocess.run([mcvfs_bin(), "push", "--plain-http", "--sign-key", str(keys / "cosign.key"),
                              str(FIXTURE), f"{r.host}/org/cache:cuda-sm90"],
                             capture_output=True, text=True, timeout=GUARD, env=env)
        assert out.returncode == 0, out.stderr
        r.public_key = keys / "cosign.pub"
        yield r


@pytest.fixture
def service(mcvfs, registry, tmp_path):
    """mcvfs@triton.service with /etc/mcvfs/triton.conf's variables, as a node would configure it."""
    mountpoint = tmp_path / "triton"
    conf = tmp_path / "triton.conf"
    conf.write_text(f"MCVFS_REFERENCE={registry.host}/org/cache\nMCVFS_MOUNTPOINT={mountpoint}\n"
                    f"MCVFS_OPTIONS=--plain-http --gpu cuda:90 --cache-dir {tmp_path / 'cache'} --log-level debug\n"
                    # The unit's default names /etc/mcvfs/triton.pub; this node keeps its key elsewhere.
                    f"MCVFS_TRUST=--key={registry.public_key}\n")
    s = Supervisor(unit=REPO_ROOT / "systemd" / "mcvfs@.service", instance="triton", environment_file=conf,
                   binary=mcvfs_bin(), workdir=tmp_path, base_env=mcvfs.env)
    s.mountpoint = mountpoint
    yield s
    s.close()
    if is_mountpoint(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


@pytest.fixture
def probes():
    started: list[Probe] = []
    yield lambda root, log: started.append(Probe(root, log)) or started[-1]
    for probe in started:
        probe.close()


class Probe:
    def __init__(self, root: Path, log: Path):
        group = next(p.name for p in (FIXTURE / KEY).iterdir() if p.name.startswith("__grp__"))
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(PROBE), str(root), KEY, group, str(log)],
                                     stdin=subprocess.DEVNULL)
        self.wait_for(lambda events: any("outcome" in e for e in events), "the probe never started")

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def wait_for(self, condition, what: str, service=None) -> None:
        deadline = time.monotonic() + GUARD
        while not condition(self.events()):
            assert self.proc.poll() is None, "the probe died"
            assert not (service and service.errors), service.errors
            assert time.monotonic() < deadline, f"{what}: {self.events()}"
            time.sleep(0.02)

    def wait_recovered(self, service) -> None:
        def recovered(events):
            outcomes = [e["outcome"] for e in events if "outcome" in e]
            return any(o != "ok" for o in outcomes) and outcomes[-1] == "ok"
        self.wait_for(recovered, "lookups never worked again", service)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=GUARD)
        return next(e["summary"] for e in self.events() if "summary" in e)


def hits(service, tmp_path, name: str) -> None:
    lines, summary = run_triton(service.mountpoint, "cuda:90:32", kernels="add,softmax,matmul", matmul_configs=4,
                                home=tmp_path / f"home-{name}")
    assert summary["hits"] == summary["kernels"] == 6, (lines, summary)


def test_a_killed_daemon_is_restarted_and_replaces_its_stale_mount_from_beneath(service, probes, tmp_path):
    first = service.start()
    hits(service, tmp_path, "before")
    probe = probes(service.mountpoint, tmp_path / "crash.log")
    os.kill(first, signal.SIGKILL)
    probe.wait_recovered(service)
    summary = probe.stop()
    assert service.restarts == 1 and service.main_pid != first
    # Lookups failed only while no daemon served (ENOTCONN, ECONNABORTED for those in flight), never with
    # ENOENT: the bare mountpoint was never visible, so Triton never compiled into it.
    assert set(summary["outcomes"]) <= {"ok", "ENOTCONN", "ECONNABORTED"}, summary
    assert 0 < summary["failed_for"] < 60, summary
    print(f"\nkill -9 under systemd (RestartSec={service.settings['RestartSec'][0]}): lookups failed for "
          f"{summary['failed_for']:.3f} s {summary['outcomes']}")
    assert not list(service.mountpoint.glob("*.tmp*")) and is_mountpoint(service.mountpoint)
    hits(service, tmp_path, "after")


def test_reload_replaces_the_daemon_without_a_failed_lookup(service, probes, tmp_path):
    old = service.start()
    hits(service, tmp_path, "before")
    probe = probes(service.mountpoint, tmp_path / "reload.log")
    reloaded = time.monotonic()
    service.reload()
    probe.wait_for(lambda events: len([e for e in events if "outcome" in e]) >= 1 and not alive(old),
                   "the old daemon did not exit")
    time.sleep(0.5)  # and lookups go on with the new daemon alone
    summary = probe.stop()
    assert summary["failures"] == 0 and summary["probes"] > 50, summary
    # The replacement named itself the main process; the old daemon left without STOPPING=1, which would
    # have told systemd the service is going down.
    assert service.main_pid not in (None, old) and alive(service.main_pid)
    after = service.since(reloaded)
    assert any(n.get("MAINPID") == str(service.main_pid) for n in after), after
    assert not any("STOPPING" in n for n in after), after
    assert service.restarts == 0
    print(f"\nsystemctl reload: {summary['probes']} lookups, none failed")
    hits(service, tmp_path, "after")
    # A stop after the reload ends the new daemon's mount as the unit's own.
    stopping = time.monotonic()
    service.stop()
    assert any(n.get("STOPPING") == "1" for n in service.since(stopping))
    assert not is_mountpoint(service.mountpoint)


def test_restart_is_stop_then_start_and_consumers_see_the_bare_mountpoint_meanwhile(service, probes, tmp_path):
    """What README and systemd/README.md say `systemctl restart` does, checked: the unit stops (its mount goes: a
    lookup racing the unmount fails with ECONNABORTED or ENOTCONN, later ones answer ENOENT from the directory
    underneath), then starts (the mount is back)."""
    service.start()
    probe = probes(service.mountpoint, tmp_path / "restart.log")
    service.stop()
    assert not is_mountpoint(service.mountpoint)
    service.start_again()
    probe.wait_recovered(service)
    summary = probe.stop()
    assert "ENOENT" in summary["outcomes"], summary
    assert set(summary["outcomes"]) <= {"ok", "ENOENT", "ECONNABORTED", "ENOTCONN"}, summary
    print(f"\nsystemctl restart: lookups failed with ENOENT for {summary['failed_for']:.3f} s")
    hits(service, tmp_path, "after")
