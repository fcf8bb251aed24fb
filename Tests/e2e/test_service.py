"""mcvfs as a node service (issue 7): the systemd unit, sd_notify readiness, SIGTERM, status, metrics, the
cache bound and prune, offline and mirrored mounts, and the Kubernetes manifests.

Daemons run the way the unit runs them: `mcvfs mount --foreground` with NOTIFY_SOCKET naming a datagram
socket the test owns. Timeouts are hang guards, never assertions about speed."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from support.images import build_mcv_layout, skopeo_push
from support.mcvfs import Mcvfs, blob_files, pack_files
from support.net import wait_until
from support.registry import Registry, require_tool
from support.supervisor import unit_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0"
GUARD = 120  # seconds: a hang guard only


# -- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svc_layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc-layouts")
    return {
        "cuda-sm90": build_mcv_layout(FIXTURES / "cuda-90", root / "cuda-90", tag="cuda-sm90"),
        "cuda-sm80": build_mcv_layout(FIXTURES / "cuda-80", root / "cuda-80", tag="cuda-sm80"),
    }


def start_registry(workdir: Path, svc_layouts) -> Registry:
    registry = Registry(workdir).start()
    for tag, layout in svc_layouts.items():
        skopeo_push(layout, registry.host, "org/cache", tag)
    return registry


@pytest.fixture
def registry(tmp_path, svc_layouts):
    r = start_registry(tmp_path / "registry", svc_layouts)
    yield r
    r.stop()


@pytest.fixture
def cache(tmp_path) -> Path:
    d = tmp_path / "cache"
    d.mkdir()
    return d


# -- a daemon started the way the unit starts it ----------------------------------------------------------

class NotifySocket:
    """An AF_UNIX datagram socket bound at a path: what systemd hands a Type=notify service."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(GUARD)

    def receive(self, proc: subprocess.Popen | None = None) -> dict[str, str]:
        """The next datagram as KEY=VALUE pairs; fails (rather than hangs) if the daemon dies first."""
        while True:
            self.sock.settimeout(1)
            try:
                data = self.sock.recv(4096).decode()
                return dict(line.split("=", 1) for line in data.split("\n") if line)
            except socket.timeout:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"daemon exited ({proc.returncode}) without notifying") from None
                self._waited = getattr(self, "_waited", 0) + 1
                if self._waited > GUARD:
                    raise AssertionError("no notification within the hang guard") from None

    def receive_until(self, key: str, proc: subprocess.Popen | None = None) -> list[dict[str, str]]:
        """Datagrams up to and including the first that sets `key` (STATUS= updates may come before it)."""
        seen = []
        while not seen or key not in seen[-1]:
            seen.append(self.receive(proc))
        return seen

    def close(self):
        self.sock.close()
        os.unlink(self.path)


@dataclass
class Daemon:
    proc: subprocess.Popen
    mountpoint: Path
    log: Path
    notify: NotifySocket
    ready: dict[str, str] | None = None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=GUARD)


def mounted(path: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        dash = fields.index("-")
        if fields[4] == str(path) and fields[dash + 1] == "fuse.mcvfs":
            return True
    return False


class Service:
    """Starts and always stops mount daemons for one test."""

    def __init__(self, mcvfs: Mcvfs, tmp_path: Path):
        self.mcvfs = mcvfs
        self.tmp = tmp_path
        self.daemons: list[Daemon] = []

    def start(self, ref: str, *options: str, name: str = "mnt", wait_ready: bool = True) -> Daemon:
        mountpoint = self.tmp / name
        mountpoint.mkdir(exist_ok=True)
        notify = NotifySocket(self.tmp / f"notify-{name}-{len(self.daemons)}.sock")
        log = self.tmp / f"daemon-{name}-{len(self.daemons)}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                self.mcvfs.argv("mount", "--foreground", "--plain-http", "--log-level", "debug", *options, ref,
                                str(mountpoint)),
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                env={**self.mcvfs.env, "NOTIFY_SOCKET": notify.path})
        daemon = Daemon(proc, mountpoint, log, notify)
        self.daemons.append(daemon)
        if wait_ready:
            try:
                daemon.ready = notify.receive(proc)
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- daemon stderr\n{daemon.stderr()}") from None
        return daemon

    def stop_all(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                try:
                    d.proc.wait(timeout=GUARD)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait()
            if mounted(d.mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(d.mountpoint)], check=False)
            d.notify.close()


@pytest.fixture
def service(mcvfs, tmp_path):
    s = Service(mcvfs, tmp_path)
    yield s
    s.stop_all()


def expected_files(fixture: Path) -> dict[str, bytes]:
    return {str(p.relative_to(fixture)): p.read_bytes() for p in fixture.rglob("*") if p.is_file()}


def assert_serves(mountpoint: Path, fixture: Path) -> None:
    """Every fixture file is served: byte-equal, or for group files with child paths under the mountpoint."""
    for rel, data in expected_files(fixture).items():
        served = (mountpoint / rel).read_bytes()
        if Path(rel).name.startswith("__grp__"):
            children = json.loads(served)["child_paths"]
            for child, path in children.items():
                assert path == str(mountpoint / Path(rel).parent / child), (rel, path)
        else:
            assert served == data, rel


def status(mountpoint: Path) -> dict:
    return json.loads((mountpoint / ".mcvfs" / "status.json").read_text())


def cache_size(cache: Path) -> int:
    """What the bound counts: blobs, and the packs of layers unpacked whole."""
    return sum(p.stat().st_size for p in [*blob_files(cache).values(), *pack_files(cache).values()])


def layer_digests(layout) -> list[str]:
    return [l["digest"] for l in layout.manifest()["layers"]]


def index_exists(cache: Path, layer: str) -> bool:
    return (cache / "index" / "sha256" / (layer.split(":")[1] + ".json")).exists()


# -- systemd ----------------------------------------------------------------------------------------------

NAMESPACE_OPTIONS = ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "ReadOnlyPaths",
                     "PrivateDevices", "PrivateMounts", "ProtectKernelTunables", "ProtectKernelModules",
                     "ProtectControlGroups", "TemporaryFileSystem", "InaccessiblePaths", "MountFlags")


def test_unit_installs_and_verifies(tmp_path):
    analyze = require_tool("systemd-analyze")
    binary = os.environ["MCVFS_BIN"]
    dest = tmp_path / "root"
    out = subprocess.run([str(REPO_ROOT / "scripts" / "install"), "--destdir", str(dest), "--binary", binary,
                          "--no-reload"], capture_output=True, text=True, timeout=GUARD)
    assert out.returncode == 0, out.stderr
    unit = dest / "etc/systemd/system/mcvfs@.service"
    assert (dest / "usr/local/bin/mcvfs").read_bytes() == Path(binary).read_bytes()
    conf = (dest / "etc/mcvfs/example.conf").read_text()
    for key in ("MCVFS_REFERENCE=", "MCVFS_MOUNTPOINT=", "MCVFS_OPTIONS="):
        assert re.search(rf"^{key}", conf, re.M), key

    s = unit_settings(unit.read_text())
    assert s["Type"] == ["notify"]
    assert s["EnvironmentFile"] == ["/etc/mcvfs/%i.conf"]
    assert s["ExecStart"] == [
        "/usr/local/bin/mcvfs mount --foreground $MCVFS_TRUST $MCVFS_OPTIONS ${MCVFS_REFERENCE} ${MCVFS_MOUNTPOINT}"]
    assert "MCVFS_TRUST=--key=/etc/mcvfs/%i.pub" in s["Environment"], "it verifies signatures by default"
    # A crashed daemon's stale mount is replaced by the next mount from beneath; unmounting it before (or after
    # the crash, in ExecStopPost) would show consumers the bare directory (test_restarts.py).
    assert not any("unmount" in v for v in s.get("ExecStartPre", []) + s.get("ExecStopPost", []))
    assert any("mount --replace" in v for v in s["ExecReload"])
    assert any("mcvfs unmount ${MCVFS_MOUNTPOINT}" in v for v in s["ExecStop"])
    assert s["Restart"] == ["on-failure"]
    assert s["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER"]
    assert s["StateDirectoryMode"] == ["0700"]
    assert s["DeviceAllow"] == ["/dev/fuse rw"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["StandardError"] == ["journal"]
    # Each of these would give the service a private mount namespace, and the FUSE mount would never reach
    # the host (systemd.exec(5), PrivateMounts=).
    assert not set(NAMESPACE_OPTIONS) & set(s), sorted(set(NAMESPACE_OPTIONS) & set(s))

    # systemd-analyze checks that Exec* binaries exist: verify an instance pointing at the staged binary.
    verify_dir = tmp_path / "verify"
    verify_dir.mkdir()
    instance = verify_dir / "mcvfs@triton.service"
    instance.write_text(unit.read_text().replace("/usr/local/bin/mcvfs", str(dest / "usr/local/bin/mcvfs")))
    out = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True, timeout=GUARD,
                         cwd=verify_dir)
    # Unknown keys and bad values are only warnings to systemd-analyze: any output is a failure here.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), (out.stdout, out.stderr)


def test_ready_only_once_the_mount_serves_and_sigterm_unmounts(service, registry, cache):
    ref = f"{registry.host}/org/cache"
    d = service.start(ref, "--gpu", "cuda:90", "--cache-dir", str(cache))
    # At the moment READY=1 arrives the mount is in place and answers.
    assert d.ready.get("READY") == "1", d.ready
    assert "mounted" in d.ready.get("STATUS", ""), d.ready
    assert mounted(d.mountpoint)
    doc = status(d.mountpoint)
    assert [i["name"] for i in doc["used"]] == ["cuda-sm90"], doc
    assert doc["service"]["systemdNotify"] is True
    lease = Path(doc["service"]["lease"])
    assert lease.exists() and lease.parent == cache / "leases"
    assert_serves(d.mountpoint, FIXTURES / "cuda-90")

    assert d.terminate() == 0, d.stderr()
    messages = d.notify.receive_until("STOPPING")
    assert messages[-1]["STOPPING"] == "1"
    assert all(set(m) == {"STATUS"} for m in messages[:-1]), messages  # READY=1 is sent once
    assert any("1 layer(s) in use" in m["STATUS"] for m in messages[:-1]), messages
    assert not mounted(d.mountpoint), "SIGTERM left the mount behind"
    assert not any(d.mountpoint.iterdir()), "the mountpoint is not the empty directory again"
    assert not lease.exists(), "the lease outlived its mount"


def test_sigterm_right_after_ready_still_unmounts(service, registry, cache):
    """A service manager may stop the unit the moment it reports ready: the signal must still end in an
    unmount and a clean exit, not a dead daemon and a stale mount."""
    d = service.start(f"{registry.host}/org/cache:cuda-sm90", "--gpu", "cuda:90", "--cache-dir", str(cache))
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=GUARD) == 0, d.stderr()
    assert d.notify.receive_until("STOPPING")[-1]["STOPPING"] == "1"
    assert not mounted(d.mountpoint)


def test_no_ready_when_the_mount_cannot_serve(service, cache):
    # Nothing listens on port 1 and nothing was recorded: the daemon cannot resolve the reference.
    d = service.start("127.0.0.1:1/org/cache", "--gpu", "cuda:90", "--cache-dir", str(cache), "--timeout", "2",
                      wait_ready=False)
    rc = d.proc.wait(timeout=GUARD)
    assert rc != 0
    d.notify.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        d.notify.sock.recv(4096)  # nothing was ever sent: no READY=1 for a mount that does not serve
    assert not mounted(d.mountpoint)


def test_status_command(service, registry, cache, mcvfs):
    d = service.start(f"{registry.host}/org/cache", "--gpu", "cuda:90", "--cache-dir", str(cache))
    assert (d.mountpoint / "3PTOANQEQTSA6SMXSRQSEKSNTIQYFJIP37QGU5JTYHLWOCHFGMCQ").is_dir()  # loads the image
    one = mcvfs.run("status", "--json", str(d.mountpoint))
    [doc] = one.json()["mounts"]
    assert doc["mountpoint"] == str(d.mountpoint) and doc["state"] == "serving"
    assert [i["name"] for i in doc["used"]] == ["cuda-sm90"]
    assert {i["name"]: i["reason"] for i in doc["skipped"]}["cuda-sm80"].startswith("targets cuda:80")
    assert doc["used"][0]["digest"].startswith("sha256:")
    for key in ("bytesFetched", "layerCacheHits", "layerCacheMisses", "verificationFailures", "fetchErrors",
                "lastErrors"):
        assert key in doc["fetch"], key
    assert isinstance(doc["uppers"], list)  # upper sizes, reported by the writable overlay
    assert doc["service"]["cacheDir"] == str(cache)
    everything = mcvfs.run("status", "--json").json()
    assert str(d.mountpoint) in [m["mountpoint"] for m in everything["mounts"]]
    table = mcvfs.run("status", str(d.mountpoint))
    assert table.rc == 0 and str(d.mountpoint) in table.stdout and "cuda-sm80: targets" in table.stdout, table
    missing = mcvfs.run("status", str(cache))
    assert missing.rc == 1 and "not an mcvfs mount" in missing.error_line


# -- metrics ----------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$')


def parse_prometheus(text: str) -> dict[str, float]:
    """A strict reader of the text format: every line is HELP, TYPE or a sample of a declared family."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample {name} before its # TYPE"
        samples[name + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_endpoint_counts_as_reads_happen(service, registry, cache):
    d = service.start(f"{registry.host}/org/cache:cuda-sm90", "--gpu", "cuda:90", "--cache-dir", str(cache),
                      "--metrics-listen", "127.0.0.1:0")
    address = status(d.mountpoint)["service"]["metricsListen"]
    url = f"http://{address}/metrics"

    before = requests.get(url, timeout=GUARD)
    assert before.status_code == 200 and before.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m0 = parse_prometheus(before.text)
    assert m0["mcvfs_fetched_bytes_total"] == 0
    assert m0['mcvfs_layer_fetch_seconds_bucket{le="+Inf"}'] == 0
    assert m0['mcvfs_images{state="used"}'] == 1

    assert_serves(d.mountpoint, FIXTURES / "cuda-90")
    assert not (d.mountpoint / "NO-SUCH-KEY").exists()
    m1 = parse_prometheus(requests.get(url, timeout=GUARD).text)
    layers = sum(l["size"] for l in json.loads(requests.get(
        f"http://{registry.host}/v2/org/cache/manifests/cuda-sm90",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=GUARD).text)["layers"])
    assert m1["mcvfs_fetched_bytes_total"] == layers
    assert m1["mcvfs_layer_cache_misses_total"] >= 1
    assert m1['mcvfs_layer_fetch_seconds_bucket{le="+Inf"}'] == m1["mcvfs_layer_fetch_seconds_count"] >= 1
    assert m1['mcvfs_fuse_errors_total{op="lookup",errno="ENOENT"}'] >= 1
    assert m1["mcvfs_verification_failures_total"] == 0
    # The layer is served once it verified; the blob and its pack land in the cache in the background.
    wait_until(lambda: parse_prometheus(requests.get(url, timeout=GUARD).text)["mcvfs_cache_bytes"] >= layers,
               timeout=GUARD, what="the layer's commit")

    assert requests.get(f"http://{address}/", timeout=GUARD).status_code == 404


def test_metrics_are_off_by_default(service, registry, cache):
    d = service.start(f"{registry.host}/org/cache:cuda-sm90", "--gpu", "cuda:90", "--cache-dir", str(cache))
    assert status(d.mountpoint)["service"].get("metricsListen") is None
    assert listening_sockets(d.proc.pid) == set()


def listening_sockets(pid: int) -> set[int]:
    """Inodes of TCP sockets in LISTEN state (0A) that the process holds open."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            held.add(int(target[8:-1]))
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                listening.add(int(fields[9]))
    return held & listening


# -- cache bound and prune --------------------------------------------------------------------------------

def use_once(service: Service, ref: str, gpu: str, fixture: Path, cache: Path, *options: str, name: str) -> None:
    d = service.start(ref, "--gpu", gpu, "--cache-dir", str(cache), *options, name=name)
    assert_serves(d.mountpoint, fixture)
    assert d.terminate() == 0, d.stderr()


def test_eviction_keeps_the_cache_under_the_bound_while_the_mount_works(service, registry, cache, svc_layouts):
    host = registry.host
    use_once(service, f"{host}/org/cache:cuda-sm80", "cuda:80", FIXTURES / "cuda-80", cache, name="a")
    size80 = cache_size(cache)
    use_once(service, f"{host}/org/cache:cuda-sm90", "cuda:90", FIXTURES / "cuda-90", cache, name="b")
    both = cache_size(cache)
    assert both > size80
    bound = both - size80 // 2  # more than configs must go, and the running mount's own layers may not

    d = service.start(f"{host}/org/cache:cuda-sm90", "--gpu", "cuda:90", "--cache-dir", str(cache),
                      "--cache-max-size", str(bound), name="c")
    assert_serves(d.mountpoint, FIXTURES / "cuda-90")
    # Enforced once what the mount unpacked is committed, in the background.
    wait_until(lambda: cache_size(cache) <= bound, timeout=GUARD, what="the bound's enforcement")
    blobs = blob_files(cache)
    for layer in layer_digests(svc_layouts["cuda-sm80"]):
        assert layer not in blobs and not index_exists(cache, layer), "the unused layer was not evicted"
    for layer in layer_digests(svc_layouts["cuda-sm90"]):
        assert layer in blobs and index_exists(cache, layer), "the live layer was evicted"
    doc = status(d.mountpoint)["service"]
    assert doc["cacheMaxSize"] == bound and doc["evictedBytes"] > 0 and doc["cacheSize"] <= bound
    assert_serves(d.mountpoint, FIXTURES / "cuda-90")  # and it keeps working
    assert d.terminate() == 0, d.stderr()

    # With nothing live, a second mount of the other image brings the cache back under the bound on its own.
    use_once(service, f"{host}/org/cache:cuda-sm80", "cuda:80", FIXTURES / "cuda-80", cache,
             "--cache-max-size", str(size80 + 4096), name="e")
    assert cache_size(cache) <= size80 + 4096


def test_prune_never_removes_a_live_blob(service, registry, cache, mcvfs, svc_layouts):
    host = registry.host
    use_once(service, f"{host}/org/cache:cuda-sm80", "cuda:80", FIXTURES / "cuda-80", cache, name="a")
    d = service.start(f"{host}/org/cache:cuda-sm90", "--gpu", "cuda:90", "--cache-dir", str(cache), name="b")
    assert_serves(d.mountpoint, FIXTURES / "cuda-90")
    live = set(blob_files(cache))
    listing = mcvfs.run("cache", "ls", "--json", "--cache-dir", str(cache)).json()
    sm90 = set(layer_digests(svc_layouts["cuda-sm90"]))
    sm80 = set(layer_digests(svc_layouts["cuda-sm80"]))
    kinds = {b["digest"]: (b["kind"], b["live"]) for b in listing["blobs"]}
    for layer in sm90:
        assert kinds[layer] == ("layer", True)
    for layer in sm80:
        assert kinds[layer] == ("layer", False)
    assert [l["mountpoint"] for l in listing["leases"]] == [str(d.mountpoint)]
    live_digests = {digest for digest, (_, is_live) in kinds.items() if is_live}
    # Whole layers are unpacked into packs listed with their layer, not into one blob per file.
    assert sm90 | sm80 <= set(pack_files(cache))

    # A crash leftover: a lease of a dead mount naming the sm80 layer. Nobody holds its lock, so it is stale.
    stale = cache / "leases" / "999999.json"
    stale.write_text(json.dumps({"pid": 999999, "mountpoint": "/gone", "reference": "x",
                                 "created": "2026-01-01T00:00:00Z", "layers": sorted(sm80), "blobs": []}))

    out = mcvfs.run("cache", "prune", "--all", "--cache-dir", str(cache))
    assert out.rc == 0, out
    after = set(blob_files(cache))
    assert live_digests <= after, sorted(live_digests - after)
    assert not sm80 & after and not sm80 & set(pack_files(cache))
    assert sm90 <= set(pack_files(cache))
    assert not stale.exists()
    assert after == live_digests, "prune --all kept something no mount holds"
    assert_serves(d.mountpoint, FIXTURES / "cuda-90")
    removed = live - after
    assert removed and all(kinds[digest][1] is False for digest in removed), removed

    assert d.terminate() == 0, d.stderr()
    assert mcvfs.run("cache", "prune", "--all", "--cache-dir", str(cache)).rc == 0
    assert blob_files(cache) == {} and pack_files(cache) == {}
    assert not list((cache / "index" / "sha256").glob("*.json"))
    bad = mcvfs.run("cache", "prune", "--cache-dir", str(cache))
    assert bad.rc != 0 and "--all" in bad.stderr


# -- offline and mirror -----------------------------------------------------------------------------------

def test_offline_mount_serves_everything_with_the_registry_stopped(service, tmp_path, svc_layouts, cache):
    registry = start_registry(tmp_path / "registry", svc_layouts)
    ref = f"{registry.host}/org/cache"
    use_once(service, ref, "cuda:90", FIXTURES / "cuda-90", cache, name="online")
    registry.stop()

    d = service.start(ref, "--gpu", "cuda:90", "--cache-dir", str(cache), "--offline", name="offline")
    assert_serves(d.mountpoint, FIXTURES / "cuda-90")
    doc = status(d.mountpoint)
    assert doc["service"]["offline"] is True
    assert [i["name"] for i in doc["used"]] == ["cuda-sm90"]
    assert doc["fetch"]["bytesFetched"] == 0 and doc["fetch"]["fetchErrors"] == 0

    never = service.start(f"{registry.host}/org/other", "--gpu", "cuda:90", "--cache-dir", str(cache), "--offline",
                          name="never", wait_ready=False)
    assert never.proc.wait(timeout=GUARD) != 0
    assert "no recorded catalog" in never.stderr()


def test_offline_after_fetch(service, tmp_path, svc_layouts, cache, mcvfs):
    """`mcvfs fetch` pre-warms a node for offline mounts: it records the catalog too."""
    registry = start_registry(tmp_path / "registry", svc_layouts)
    ref = f"{registry.host}/org/cache:cuda-sm80"
    out = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:80", "--cache-dir", str(cache), ref)
    assert out.rc == 0, out
    registry.stop()
    d = service.start(ref, "--gpu", "cuda:80", "--cache-dir", str(cache), "--offline")
    assert_serves(d.mountpoint, FIXTURES / "cuda-80")


def test_mirror_first_then_origin(service, tmp_path, svc_layouts, cache):
    origin = start_registry(tmp_path / "origin", svc_layouts)
    mirror = start_registry(tmp_path / "mirror", svc_layouts)
    try:
        # Origin down: everything comes through the mirror.
        origin.stop()
        d = service.start(f"{origin.host}/org/cache:cuda-sm90", "--gpu", "cuda:90", "--cache-dir", str(cache),
                          "--mirror", mirror.host, name="via-mirror")
        assert_serves(d.mountpoint, FIXTURES / "cuda-90")
        assert status(d.mountpoint)["service"]["mirrorFallbacks"] == 0
        assert d.terminate() == 0
        assert any("/v2/org/cache/blobs/" in r.uri for r in mirror.requests_seen())

        # Mirror down, origin up: it falls back, says so, and serves.
        origin.start()
        mirror.stop()
        d = service.start(f"{origin.host}/org/cache:cuda-sm80", "--gpu", "cuda:80", "--cache-dir", str(cache),
                          "--mirror", mirror.host, name="via-origin")
        assert_serves(d.mountpoint, FIXTURES / "cuda-80")
        assert status(d.mountpoint)["service"]["mirrorFallbacks"] >= 1
        assert "falling back to the origin" in d.stderr()
    finally:
        origin.stop()
        mirror.stop()


# -- Kubernetes -------------------------------------------------------------------------------------------

def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((REPO_ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_have_what_the_flow_needs():
    docs = k8s_documents()
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (c,) = [c for c in pod["containers"] if c["name"] == "mcvfs"]
    assert c["securityContext"]["privileged"] is True
    assert c["command"][:3] == ["mcvfs", "mount", "--foreground"] or c["args"][:2] == ["mount", "--foreground"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert {"configMapRef": {"name": next(d for d in docs if d["kind"] == "ConfigMap")["metadata"]["name"]}} \
        in c["envFrom"]
    # Kubernetes expands $(VAR) in command and args from the container's environment.
    argv = [re.sub(r"\$\((\w+)\)", lambda m: config[m.group(1)], a) for a in c.get("command", []) + c.get("args", [])]
    assert argv.count("--consumer-root") == 1
    assert "--consumer-root" in argv
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mnt = next(m for m in c["volumeMounts"] if volumes[m["name"]].get("hostPath", {}).get("path") == "/var/lib/mcvfs/mnt")
    assert mnt["mountPropagation"] == "Bidirectional"
    # The mount goes inside the propagated volume, never on the volume itself (test_containers.py runs it).
    mountpoint = argv[-1]
    assert mountpoint.startswith(mnt["mountPath"] + "/"), mountpoint
    assert "--replace" in argv
    assert ds["spec"]["updateStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert any(v.get("hostPath", {}).get("path") == "/dev/fuse" for v in volumes.values())
    assert "/dev/fuse" in mounts
    cache = next(v for v in volumes.values() if v.get("hostPath", {}).get("path") == "/var/lib/mcvfs/cache")
    assert cache["hostPath"]["type"] == "DirectoryOrCreate"
    # No preStop unmount: after a takeover the mount on top is the new pod's.
    assert "preStop" not in c.get("lifecycle", {})
    probe = c["readinessProbe"]["exec"]["command"]
    ready_file = next(a.split("=", 1)[1] for a in argv if a.startswith("--ready-file="))
    assert probe[:2] == ["sh", "-c"] and f"test -e {ready_file} && exec mcvfs status {mountpoint}" == probe[2]
    env = {e["name"]: e for e in c["env"]}
    assert env["REGISTRY_AUTH_FILE"]["value"].startswith(mounts_of_secret(c, volumes, "mcvfs-registry"))
    # The publishing key comes from a Secret of its own, readable by the daemon alone.
    signing = mounts_of_secret(c, volumes, "mcvfs-signing")
    assert config["MCVFS_SIGN_KEY"] == "" and env["COSIGN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == \
        "mcvfs-signing"
    assert next(v for v in volumes.values() if v.get("secret", {}).get("secretName") == "mcvfs-signing")[
        "secret"]["defaultMode"] == 0o400, signing
    assert any(v.get("secret") for v in volumes.values())
    assert "MCVFS_CACHE_DIR" in env
    assert pod["terminationGracePeriodSeconds"] >= 30

    user = next(d for d in docs if d["kind"] == "Pod")
    (uc,) = user["spec"]["containers"]
    uvol = {v["name"]: v for v in user["spec"]["volumes"]}
    (umount,) = [m for m in uc["volumeMounts"] if uvol[m["name"]].get("hostPath")]
    assert uvol[umount["name"]]["hostPath"]["path"] == "/var/lib/mcvfs/mnt"
    assert umount["mountPropagation"] == "HostToContainer"
    uenv = {e["name"]: e["value"] for e in uc["env"]}
    assert uenv["TRITON_CACHE_DIR"] == umount["mountPath"] + mountpoint[len(mnt["mountPath"]):]
    assert argv[argv.index("--consumer-root") + 1] == uenv["TRITON_CACHE_DIR"]
    assert ("Secret", "mcvfs-registry") in kinds or any(d["kind"] == "Secret" for d in docs)


def mounts_of_secret(container: dict, volumes: dict, name: str) -> str:
    (m,) = [m for m in container["volumeMounts"]
            if volumes[m["name"]].get("secret", {}).get("secretName") == name]
    return m["mountPath"]


# -- real Triton through the offline mount ----------------------------------------------------------------

def test_triton_hits_through_an_offline_mount(service, tmp_path, cache):
    """A cache Triton itself compiled, pushed as MCV would, then used offline: every kernel is a hit."""
    python = REPO_ROOT / ".venv" / "bin" / "python"
    assert python.exists(), "run scripts/setup: the .venv with Triton is a prerequisite"
    built = tmp_path / "built"
    env = {**os.environ, "TRITON_CACHE_DIR": str(built)}
    out = subprocess.run([str(python), str(REPO_ROOT / "scripts/make-triton-cache.py"), "--target", "cuda:90:32",
                          "--kernels", "add,softmax", "--out", str(built)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    registry = Registry(tmp_path / "registry").start()
    try:
        push = subprocess.run([str(python), str(REPO_ROOT / "scripts/push-cache-image.py"), str(built),
                               f"{registry.host}/org/triton:cuda-sm90"], capture_output=True, text=True,
                              timeout=600)
        assert push.returncode == 0, push.stderr
        shutil.rmtree(built)  # a hit must come from the mount, not from the directory that compiled
        use_once_ref = f"{registry.host}/org/triton"
        d = service.start(use_once_ref, "--gpu", "cuda:90", "--cache-dir", str(cache), name="warm")
        for path in d.mountpoint.rglob("*"):  # the first access below the root fetches the layers
            if path.is_file():
                path.read_bytes()
        assert d.terminate() == 0
    finally:
        registry.stop()
    d = service.start(use_once_ref, "--gpu", "cuda:90", "--cache-dir", str(cache), "--offline", name="triton")
    run = subprocess.run([str(python), str(REPO_ROOT / "scripts/make-triton-cache.py"), "--target", "cuda:90:32",
                          "--kernels", "add,softmax"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TRITON_CACHE_DIR": str(d.mountpoint)})
    assert run.returncode == 0, run.stderr
    results = [r for r in map(json.loads, filter(None, run.stdout.splitlines())) if "name" in r]
    assert len(results) == 2 and all(r["cache_hit"] is True for r in results), results
