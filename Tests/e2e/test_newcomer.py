"""A newcomer's path: what a new user does first, and the mistakes they make, against a real registry and real
mounts. Nothing fails silently: each mistake is an error (or a warning) whose one line names the fix.
"""
from __future__ import annotations

import json
import os
import pty
import shutil
from pathlib import Path
import socket
import subprocess
import tempfile
import threading

import pytest

from support.mcvfs import Mcvfs
from support.mounts import CUDA, daemon_pids, is_mountpoint, kernel_dirs, run_triton
from support.net import wait_until
from support.proxy import FaultProxy
from support.reach import reachable
from support.registry import require_tool


# -- export: a standalone cache --------------------------------------------------------------------------------

def test_export_writes_a_cache_that_triton_hits_after_unmount(anon, mounts, tmp_path):
    mnt = mounts.mount(f"{anon.host}/org/cache", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    out = tmp_path / "exported"
    r = mnt.mcvfs.run("export", str(mnt.path), str(out))
    assert r.rc == 0, r
    assert "relocated to it" in r.stdout, r
    mnt.unmount()

    groups = sorted(out.glob("*/__grp__*.json"))
    assert groups, sorted(p.name for p in out.iterdir())
    for group in groups:
        for child in json.loads(group.read_text())["child_paths"].values():
            assert child.startswith(f"{out}/"), (group, child)
    # The fixture was compiled by scripts/make-triton-cache.py with its defaults: 6 kernels for cuda:90:32.
    lines, summary = run_triton(out, CUDA, kernels="add,softmax,matmul", matmul_configs=4, home=tmp_path / "h")
    assert summary["kernels"] == len(kernel_dirs(out)) == 6, summary
    assert summary["hits"] == 6, (summary, lines)


# -- a mistake is not an outage ---------------------------------------------------------------------------------

def test_https_to_an_http_registry_fails_the_mount_naming_plain_http(anon, mounts, tmp_path):
    # A first mount records the catalog: a second one without --plain-http must not serve it as if out.
    first = mounts.mount(f"{anon.host}/org/cache", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    first.unmount()
    r = first.mcvfs.run("mount", "--timeout", "5", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "cache"),
                        f"{anon.host}/org/cache", str(first.path))
    assert r.rc == 1, r
    assert "server gave HTTP response to HTTPS client" in r.error_line and "add --plain-http" in r.error_line, r
    assert "mounted" not in r.stdout, r


def test_a_registry_outage_at_mount_falls_back_and_says_so_on_the_terminal(fresh_registry, mounts, tmp_path):
    ref = f"{fresh_registry.host}/org/cache"
    first = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--timeout", "2")
    first.unmount()
    fresh_registry.registry.stop()
    second = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--timeout", "2",
                          "--retry-delay", "1")
    warnings = [l for l in second.result.stderr.splitlines() if l.startswith("mcvfs: warning: ")]
    assert any("registry unreachable" in l and "pinned at the last mount" in l for l in warnings), second.result
    assert "connection failed" in "\n".join(warnings), second.result


class Relay:
    """A TCP relay on a free 127.0.0.1 port to `target` (host:port), switchable: a registry that changes its
    scheme under a mount (HTTPS, then plain HTTP) without changing its address."""

    def __init__(self, target: str):
        self.target = target
        self.open: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)))
            except OSError:
                client.close()
                continue
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def switch(self, target: str) -> None:
        """Later connections go to `target`; open ones are cut (a client would reuse them)."""
        self.target = target
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def close(self) -> None:
        self.server.close()
        self.switch(self.target)


def test_https_to_an_http_registry_at_refresh_is_the_reason_in_status(tls_registry, anon, tmp_path):
    pop, cert = tls_registry
    relay = Relay(pop.host)
    mcvfs = Mcvfs(tmp_path / "home")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = mcvfs.run("mount", "--ca-file", str(cert.ca_path), "--gpu", "cuda:90", "--refresh-interval", "1",
                      "--timeout", "5", "--cache-dir", str(tmp_path / "cache"), f"{relay.host}/org/cache", str(mnt))
        assert r.rc == 0, r
        relay.switch(anon.host)  # the same address now answers in plain HTTP

        def refresh() -> dict:
            return json.loads((mnt / ".mcvfs" / "status.json").read_text())["service"]["refresh"]

        wait_until(lambda: "plain-http" in (refresh().get("lastError") or ""), timeout=60,
                   what="a refresh that meets the plain-HTTP registry")
        assert "server gave HTTP response to HTTPS client" in refresh()["lastError"], refresh()
    finally:
        mcvfs.run("unmount", str(mnt))
        relay.close()


# -- mountpoints -------------------------------------------------------------------------------------------------

def test_unmount_refuses_what_is_not_an_mcvfs_mount(mcvfs, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    r = mcvfs.run("unmount", str(plain))
    assert r.rc == 1 and "not an mcvfs mount" in r.error_line, r
    tmpfs = tmp_path / "tmpfs"
    tmpfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmpfs)], check=True)
    try:
        r = mcvfs.run("unmount", str(tmpfs))
        assert r.rc == 1 and "not an mcvfs mount (it is tmpfs)" in r.error_line, r
        assert is_mountpoint(tmpfs)
    finally:
        subprocess.run(["umount", str(tmpfs)], check=True)


def test_a_non_empty_mountpoint_is_mounted_over_with_a_warning(anon, mounts, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "mine").write_text("hidden while mounted")
    m = mounts.mount(f"{anon.host}/org/cache", mnt, tmp_path / "cache", "--gpu", "cuda:90")
    assert f"mcvfs: warning: {mnt} is not empty: the mount hides its 1 entry until it is unmounted" \
        in m.result.stderr.splitlines(), m.result
    m.unmount()
    assert (mnt / "mine").read_text() == "hidden while mounted"


# -- mistakes name their fix -------------------------------------------------------------------------------------

def test_a_wrong_key_password_says_wrong_password_not_malformed(mcvfs, anon, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    out = subprocess.run([mcvfs.binary, "generate-key-pair"], cwd=keys, capture_output=True, text=True,
                         env={**mcvfs.env, "COSIGN_PASSWORD": "right"}, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == 0, out.stderr
    r = mcvfs.run("sign", "--plain-http", "--key", str(keys / "cosign.key"), f"{anon.host}/org/cache:cuda-sm90",
                  env={"COSIGN_PASSWORD": "wrong"})
    assert r.rc == 1 and "wrong password" in r.error_line and "COSIGN_PASSWORD" in r.error_line, r
    assert "malformed" not in r.error_line, r


# -- nothing selected: one rule for mount, fetch and extract -----------------------------------------------------

NO_MATCH = ("no image of {ref} matches cuda:90:64; the repository has cuda:80:32, cuda:90:32, hip:gfx942:64 "
            "(pass one to --gpu)")


def test_mount_fetch_and_extract_warn_alike_when_no_image_matches(anon, mounts, mcvfs, tmp_path):
    ref = f"{anon.host}/org/cache"
    expected = "mcvfs: warning: " + NO_MATCH.format(ref=ref)
    fetch = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90:64", "--cache-dir", str(tmp_path / "c"), ref)
    assert fetch.rc == 0 and expected in fetch.stderr.splitlines(), fetch
    assert fetch.stdout == "", fetch
    out = tmp_path / "out"
    extract = mcvfs.run("extract", "--plain-http", "--gpu", "cuda:90:64", "--cache-dir", str(tmp_path / "c"), ref,
                        str(out))
    assert extract.rc == 0 and expected in extract.stderr.splitlines(), extract
    assert not any(out.iterdir())
    m = mounts.mount(ref, tmp_path / "mnt", tmp_path / "c", "--gpu", "cuda:90:64")
    assert expected in m.result.stderr.splitlines(), m.result
    assert "(0 image(s)" in m.result.stdout, m.result


def test_docker_transport_prefix_is_accepted_and_a_url_is_explained(mcvfs, anon):
    doc = mcvfs.run("inspect", "--plain-http", "--json", f"docker://{anon.host}/org/cache:cuda-sm90").json()
    assert doc["digest"] == anon.digests[("org/cache", "cuda-sm90")]
    r = mcvfs.run("inspect", "--plain-http", f"http://{anon.host}/org/cache:cuda-sm90")
    assert r.rc == 1 and "is a URL: give REGISTRY/REPOSITORY[:TAG] without a scheme" in r.error_line, r
    assert "--plain-http" in r.error_line, r


def test_inspect_of_a_repository_without_latest_points_at_ls(mcvfs, anon):
    r = mcvfs.run("inspect", "--plain-http", f"{anon.host}/org/cache")
    assert r.rc == 1, r
    assert "has no tag 'latest'" in r.error_line and f"mcvfs ls {anon.host}/org/cache" in r.error_line, r


# -- status: one document, a stale mount an entry of its own -----------------------------------------------------

def test_status_lists_a_stale_mount_beside_a_live_one_and_exits_0(anon, mounts, mcvfs, tmp_path):
    ref = f"{anon.host}/org/cache"
    live = mounts.mount(ref, tmp_path / "live", tmp_path / "cache-live", "--gpu", "cuda:90")
    dead = mounts.mount(ref, tmp_path / "dead", tmp_path / "cache-dead", "--gpu", "cuda:90")
    dead.kill()
    r = mcvfs.run("status", "--json")
    assert r.rc == 0, r
    entries = {m["mountpoint"]: m for m in r.json()["mounts"]}
    assert entries[str(live.path)]["state"] == "serving" and entries[str(live.path)]["reference"] == ref
    stale = entries[str(dead.path)]
    assert stale["state"] == "stale" and "Transport endpoint is not connected" in stale["error"], stale
    assert stale["fix"].startswith(f"mcvfs unmount --lazy {dead.path}"), stale
    # The same shape for one mountpoint; as a readiness probe it exits 1 for a mount that does not serve.
    one = mcvfs.run("status", "--json", str(dead.path))
    assert one.rc == 1 and json.loads(one.stdout)["mounts"] == [stale], one
    assert mcvfs.run("status", "--json", str(live.path)).rc == 0
    # The fix works.
    u = mcvfs.run("unmount", "--lazy", str(dead.path))
    assert u.rc == 0, u
    assert not is_mountpoint(dead.path)


def test_an_image_is_named_the_same_in_ls_and_status(anon, mounts, mcvfs, tmp_path):
    ref = f"{anon.host}/org/cache"
    listed = mcvfs.run("ls", "--plain-http", "--gpu", "cuda:90", "--json", ref).json()
    compatible = [i["name"] for i in listed["images"] if i["compatible"]]
    m = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    [doc] = mcvfs.run("status", "--json", str(m.path)).json()["mounts"]
    assert [i["name"] for i in doc["used"]] == compatible == ["cuda-sm90"], (listed, doc)


# -- script-friendly output ----------------------------------------------------------------------------------------

FIXTURE_CUDA90 = Path(__file__).resolve().parents[1] / "Fixtures" / "triton-3.9.0" / "cuda-90"


def test_push_fetch_extract_mount_and_gpus_print_json(anon, mounts, mcvfs, tmp_path):
    ref = f"{anon.host}/newcomer/json:v1"
    pushed = mcvfs.run("push", "--plain-http", "--json", str(FIXTURE_CUDA90), ref, timeout=300).json()
    [image] = pushed["images"]
    assert image["name"] == ref and image["digest"].startswith("sha256:"), pushed
    fetched = mcvfs.run("fetch", "--plain-http", "--json", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "c"),
                        ref).json()
    assert [(i["name"], i["digest"]) for i in fetched["images"]] == [("v1", image["digest"])], fetched
    assert fetched["images"][0]["layers"] and all(l["size"] > 0 for l in fetched["images"][0]["layers"])
    out = tmp_path / "out"
    extracted = mcvfs.run("extract", "--plain-http", "--json", "--gpu", "cuda:90", "--cache-dir",
                          str(tmp_path / "c"), ref, str(out)).json()
    assert extracted["directory"] == str(out) and extracted["kernels"] == 6, extracted
    assert extracted["images"] == [{"name": "v1", "digest": image["digest"]}], extracted
    m = mounts.mount(f"{anon.host}/org/cache", tmp_path / "mnt", tmp_path / "c2", "--gpu", "cuda:90", "--json",
                     check=False)
    assert m.result.rc == 0, m.result
    ready = json.loads(m.result.stdout)
    assert ready["mountpoint"] == str(m.path) and [ready["pid"]] == daemon_pids(m.path), ready
    assert [i["name"] for i in ready["images"]] == ["cuda-sm90"], ready
    assert "cuda-sm80" in [s["name"] for s in ready["skipped"]], ready
    gpus = mcvfs.run("gpus", "--json", env={"MCVFS_GPU": "hip:gfx942:64"}).json()
    assert gpus["gpus"] == ["hip:gfx942:64"], gpus


def test_a_usage_error_is_one_line_and_exit_64_as_documented(mcvfs):
    r = mcvfs.run("ls")
    assert r.rc == 64, r
    assert r.stderr == "mcvfs: error: Missing expected argument '<repository>' (see `mcvfs ls --help`)\n", r
    r = mcvfs.run("mount", "--no-such-option", "a/b", "/tmp")
    assert r.rc == 64 and r.error_line.startswith("mcvfs: error: Unknown option '--no-such-option'"), r
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| 64 |" in readme, "the README's exit-code table must name 64 for usage errors"


# -- progress: on a terminal, never on a pipe ---------------------------------------------------------------------

def on_a_terminal(mcvfs, *args: str) -> tuple[int, str]:
    """Runs mcvfs with stderr on a pseudo-terminal; returns (exit code, what the terminal showed)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(mcvfs.argv(*args), stdout=subprocess.DEVNULL, stderr=secondary,
                            stdin=subprocess.DEVNULL, env=mcvfs.env)
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    return proc.wait(timeout=300), shown.decode(errors="replace")


def test_push_and_fetch_show_progress_on_a_terminal_and_nothing_on_a_pipe(anon, mcvfs, tmp_path):
    ref = f"{anon.host}/newcomer/progress:v1"
    rc, shown = on_a_terminal(mcvfs, "push", "--plain-http", str(FIXTURE_CUDA90), ref)
    assert rc == 0, shown
    assert "push v1: building the layer from" in shown and "push v1 [" in shown and "blobs " in shown, shown
    rc, shown = on_a_terminal(mcvfs, "fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir",
                              str(tmp_path / "c1"), ref)
    assert rc == 0, shown
    assert "fetch [" in shown and "blobs 1/1" in shown, shown
    piped = mcvfs.run("fetch", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(tmp_path / "c2"), ref)
    assert piped.rc == 0 and piped.stderr == "", piped
    piped = mcvfs.run("push", "--plain-http", str(FIXTURE_CUDA90), ref)
    assert piped.rc == 0 and piped.stderr == "", piped


def test_extract_into_a_directory_the_user_cannot_write_says_permission_denied(mcvfs, anon):
    # Root writes anywhere: run as uid 65534, in a directory of its own that it can reach.
    work = Path(tempfile.mkdtemp(prefix="mcvfs-denied-"))
    try:
        work.chmod(0o755)
        locked, home = work / "locked", work / "home"
        locked.mkdir(mode=0o555)
        home.mkdir()
        os.chown(home, 65534, 65534)
        env = {**mcvfs.env, "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "XDG_CACHE_HOME": str(home),
               "MCVFS_CACHE_DIR": str(home / "cache")}
        argv = [require_tool("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", reachable(mcvfs.binary),
                "extract", "--plain-http", "--gpu", "cuda:90", f"{anon.host}/org/cache:cuda-sm90",
                str(locked / "out")]
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=str(home),
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 1, out
        assert out.stderr.splitlines()[-1] == f"mcvfs: error: permission denied: {locked / 'out'}", out.stderr
    finally:
        shutil.rmtree(work)


@pytest.mark.parametrize("status, outcome", [(503, "falls back"), (404, "not found"), (403, "not authorized")])
def test_only_an_outage_falls_back_to_the_recorded_catalog(anon, mounts, tmp_path, status, outcome):
    with FaultProxy(anon.host) as proxy:
        ref = f"{proxy.host}/org/cache"
        first = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--timeout", "2")
        first.unmount()
        proxy.fail("tags", status, times=1000)
        second = mounts.mount(ref, tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90", "--timeout", "2",
                              check=False)
        if outcome == "falls back":
            assert second.result.rc == 0, second.result
            assert "registry unreachable" in second.result.stderr and "HTTP 503" in second.result.stderr, \
                second.result
        else:
            assert second.result.rc == 1, second.result
            assert f"mcvfs: error: {outcome}" in second.result.stderr, second.result


def test_unmount_of_a_busy_mount_names_lazy(anon, mounts, tmp_path):
    m = mounts.mount(f"{anon.host}/org/cache", tmp_path / "mnt", tmp_path / "cache", "--gpu", "cuda:90")
    key = sorted(kernel_dirs(FIXTURE_CUDA90))[0]
    held = open(next((m.path / key).iterdir()), "rb")
    try:
        r = m.mcvfs.run("unmount", str(m.path))
        assert r.rc == 1 and "busy" in r.error_line and "try --lazy" in r.error_line, r
        assert is_mountpoint(m.path)
    finally:
        held.close()
    m.unmount()
