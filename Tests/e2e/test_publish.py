"""`mcvfs publish` and `mount --publish-to` (issue 16) against a real registry, real mounts and real Triton: what is
taken from an upper (complete entries only, never temp dirs or files still being written, never what an image of
the mount provides, never twice), what the image is (MCV layout and labels, eStargz, triton_version, a
content-derived tag, read back by skopeo), that an interrupted publish leaves no tag, and the daemon's periodic
publish with its failures counted and retried while reads go on."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.fleet import REPO, Fleet, Node, fleet, key_pair, pushed, wait_for  # noqa: F401 (fleet: a fixture)
from support.mcvfs import Mcvfs
from support.mounts import PYTHON, MountPool
from support.reach import reachable
from support.net import free_port
from support.proxy import FaultProxy
from support.registry import require_tool
from support.metrics import metric

UID = 1000
REPO_ROOT = Path(__file__).resolve().parents[2]



def fleet_tags_of(fleet: Fleet) -> set[str]:
    return set(fleet.fleet_tags())


def test_publish_pushes_complete_new_kernels_once_as_an_mcv_estargz_image(fleet: Fleet):
    a = fleet.node("a")
    lines, summary = a.compile([32, 64])
    assert summary == {"kernels": 2, "hits": 0}, lines
    keys = a.upper_keys()
    assert len(keys) == 2, keys

    dry = a.publish("--dry-run")
    assert dry.rc == 0, str(dry)
    assert dry.stdout.startswith("would push ") and all(k in dry.stdout for k in keys), str(dry)
    assert fleet_tags_of(fleet) == set(), "a dry run pushes nothing"

    out = pushed(a.publish())
    assert len(out) == 1, out
    digest, reference = out[0]
    tag = reference.rsplit(":", 1)[1]
    assert tag == f"fleet-cuda-sm90-{digest.removeprefix('sha256:')[:16]}", tag
    assert fleet_tags_of(fleet) == {tag}

    # What third parties read: skopeo sees the MCV labels (triton_version included) and the eStargz TOC digest.
    info = json.loads(subprocess.run(
        [require_tool("skopeo"), "inspect", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    labels = info["Labels"]
    assert labels["cache.triton.image/entry-count"] == "2"
    assert json.loads(labels["cache.triton.image/summary"]) == {
        "targets": [{"arch": "90", "backend": "cuda", "warp_size": 32}]}
    assert labels["model.cache.image/triton-version"] == "3.9.0"
    raw = json.loads(subprocess.run(
        [require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True, text=True, timeout=120, check=True).stdout)
    assert "containerd.io/snapshot/stargz/toc.digest" in raw["layers"][0]["annotations"]

    # The kernels come back byte for byte (group files name the canonical root), through the tool's extract.
    ex = fleet.root / "extracted"
    r = fleet.run("extract", "--plain-http", "--gpu", "cuda:90", "--cache-dir", str(fleet.root / "x-cache"),
                  reference, str(ex))
    assert r.rc == 0, str(r)
    upper = next((a.cache / "upper").glob("*/0"))
    for key in keys:
        for f in (upper / key).iterdir():
            if not f.name.startswith("__grp__"):
                assert (ex / key / f.name).read_bytes() == f.read_bytes(), f

    # Again: nothing is pushed (the registry sees no upload, no manifest PUT).
    mark = fleet.registry.mark()
    again = a.publish("--json")
    assert again.rc == 0, str(again)
    assert again.json()["images"] == [] and again.json()["known"] == 2
    writes = [r for r in fleet.registry.requests_since(mark) if r.method in ("PUT", "POST", "PATCH")]
    assert writes == [], writes


def test_half_written_entries_and_triton_temp_dirs_are_never_published(fleet: Fleet):
    a = fleet.node("a")
    a.compile([128])
    (done,) = a.upper_keys()
    files = {p.name: p.read_bytes() for p in next((a.cache / "upper").glob("*/0")).joinpath(done).iterdir()}
    half, temp = "H" * 52, "T" * 52
    # Through the mount, as a compiling Triton would leave them: `half` has its group file and every child but
    # one, which is still open for writing (created with O_EXCL, written, not closed); `temp` has only Triton's
    # tmp.pid_* directory.
    writer = subprocess.Popen([PYTHON, "-c", f"""
import os, sys
d = {str(a.path / half)!r}
os.makedirs(d)
files = {{k: bytes.fromhex(v) for k, v in {json.dumps({k: v.hex() for k, v in files.items()})}.items()}}
held = sorted(n for n in files if n.endswith(".cubin"))[0]
for name, data in files.items():
    if name != held:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
fd = os.open(os.path.join(d, held), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, files[held])
os.makedirs({str(a.path / temp / "tmp.pid_77_abc")!r})
with open({str(a.path / temp / "tmp.pid_77_abc" / "x.cubin")!r}, "wb") as f:
    f.write(b"partial")
print("ready", flush=True)
sys.stdin.readline()
os.close(fd)
print("closed", flush=True)
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        report = a.publish("--json").json()
        assert [img["keys"] for img in report["images"]] == [[done]], report
        reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
        assert reasons[half].startswith("incomplete: ") and "still being written" in reasons[half], reasons
        assert reasons[temp].startswith("no group file yet"), reasons
    finally:
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "closed"
        writer.wait(timeout=30)
    # Closed, the entry is complete: the next publish takes it, alone.
    report = a.publish("--json").json()
    assert [img["keys"] for img in report["images"]] == [[half]], report


def test_an_interrupted_publish_leaves_no_tag_and_the_next_one_completes_it(fleet: Fleet):
    a = fleet.node("a")
    a.compile([256])
    with FaultProxy(fleet.registry.host) as proxy:
        # The tag is the last thing a publish writes: refuse it, as a registry failing (or a node dying) there would.
        proxy.fail("manifests", 500, times=1000, match="/manifests/fleet-", methods=("PUT",))
        r = a.publish(to=f"{proxy.host}/{REPO}")
        assert r.rc == 1 and r.error_line, str(r)
        assert proxy.count("uploads") > 0, "the blobs went up before the tag was refused"
        assert fleet_tags_of(fleet) == set(), "no tag names an image whose publish did not finish"
        # Nothing was recorded as published: the next publish makes the same image and only has to tag it.
        proxy.clear_faults()
        proxy.reset_counts()
        (image,) = a.publish("--json", to=f"{proxy.host}/{REPO}").json()["images"]
        assert image["state"] == "pushed" and image["blobsPushed"] == 0, image
        assert proxy.count("uploads") == 0, "every blob was already there"
    assert fleet_tags_of(fleet) == {image["tag"]}


def test_a_kernel_an_image_of_the_mount_provides_is_not_published_again(fleet: Fleet):
    a = fleet.node("a")
    b = fleet.node("b", "--refresh-interval", "1")
    # Both compile the same kernel; A publishes it first, and B's refresh brings A's image into B's mount.
    a.compile([512])
    b.compile([512])
    (digest, reference), = pushed(a.publish())
    b.wait_refreshed_with(reference.rsplit(":", 1)[1])
    report = b.publish("--json").json()
    assert report["images"] == [] and report["known"] == 1, report


def test_as_root_from_uid_publishes_that_users_kernels_and_a_user_cannot_take_anothers(fleet: Fleet):
    require_tool("setpriv")
    shared = Path(tempfile.mkdtemp(prefix="mcvfs-publish-", dir="/tmp"))
    os.chmod(shared, 0o755)
    try:
        a = fleet.pool.mount(fleet.repo, shared / "mnt", shared / "cache", "--gpu", "cuda:90")
        home = shared / "home-user"
        home.mkdir()
        os.chown(home, UID, UID)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRITON_")}
        env.update({"HOME": str(home), "TRITON_HOME": str(home), "TRITON_CACHE_DIR": str(a.path)})
        out = subprocess.run(
            [require_tool("setpriv"), f"--reuid={UID}", f"--regid={UID}", "--clear-groups", reachable(PYTHON),
             reachable(Path(__file__).parent / "support" / "compile_kernels.py"), "--blocks", "16"],
            env=env, cwd=str(home), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]

        def publish(*args):
            return fleet.mcvfs.run("publish", "--plain-http", "--cache-dir", str(shared / "pub-cache"), "--json",
                                   *args, str(a.path), fleet.repo)
        assert publish().json()["images"] == [], "root's own upper holds nothing: the user's kernel stays theirs"
        taken = publish("--from-uid", str(UID)).json()["images"]
        assert len(taken) == 1 and len(taken[0]["keys"]) == 1, taken

        refused = subprocess.run(
            [require_tool("setpriv"), f"--reuid={UID}", f"--regid={UID}", "--clear-groups", reachable(fleet.mcvfs.binary),
             "publish", "--plain-http", "--from-uid", "1001", str(a.path), fleet.repo],
            env={**fleet.mcvfs.env, "HOME": str(home), "MCVFS_CACHE_DIR": str(home / "cache")},
            capture_output=True, text=True, timeout=120, cwd=str(home))
        assert refused.returncode == 1, refused
        assert "only root may publish another user's kernels" in refused.stderr, refused.stderr
    finally:
        fleet.pool.close()
        shutil.rmtree(shared, ignore_errors=True)


def test_the_daemon_publishes_on_its_interval_retries_failures_and_publishes_at_unmount(fleet: Fleet):
    with FaultProxy(fleet.registry.host) as proxy:
        port = free_port()
        proxy.fail("uploads", 503, times=100000, methods=("POST",))
        a = fleet.node("a", "--publish-to", f"{proxy.host}/{REPO}", "--publish-interval", "0.5",
                       "--metrics-listen", f"127.0.0.1:{port}")
        lines, summary = a.compile([8])
        assert summary["hits"] == 0
        failing = wait_for(lambda: (p := a.status()["service"]["publishing"])["failures"] >= 2 and p,
                           guard=60, what="failed publishes")
        assert failing["consecutiveFailures"] >= 2 and "503" in failing["lastError"], failing
        assert failing["imagesPushed"] == 0 and fleet_tags_of(fleet) == set()
        assert metric(port, "mcvfs_publish_failures_total") >= 2
        # Reads never wait for publishing: the node hits its own kernel while every publish fails.
        lines, summary = a.compile([8])
        assert summary == {"kernels": 1, "hits": 1}, lines

        proxy.clear_faults()
        done = wait_for(lambda: (p := a.status()["service"]["publishing"])["imagesPushed"] == 1 and p,
                        guard=60, what="a publish once the registry accepts uploads")
        assert done["consecutiveFailures"] == 0 and done["lastPushed"] == fleet.fleet_tags(), done
        assert metric(port, "mcvfs_published_kernels_total") == 1

    # A kernel compiled just before unmount is published on the way down (the interval never came).
    b = fleet.node("b", "--publish-to", fleet.repo, "--publish-interval", "3600")
    before = fleet_tags_of(fleet)
    b.compile([4])
    b.mount.unmount()
    after = fleet_tags_of(fleet) - before
    assert len(after) == 1, (before, after)
    log = b.mount.daemon_log()
    assert f"published {fleet.registry.host}/{REPO}:{after.pop()}" in log, log


def test_a_mount_that_cannot_publish_or_refresh_is_refused_before_its_key_or_the_registry_is_read(fleet: Fleet):
    """--publish-to with --read-only, or --refresh-interval for one tagged image: refused naming the flag before a
    signing key's password is asked (none is given) and before any registry is asked (none listens)."""
    key, _ = key_pair(fleet.mcvfs, fleet.root / "keys", "pw")
    nobody = f"127.0.0.1:{free_port()}"
    mnt = fleet.root / "mnt-refused"
    mnt.mkdir()
    common = ["mount", "--foreground", "--plain-http", "--cache-dir", str(fleet.root / "cache-refused"), "--gpu",
              "cuda:90"]
    r = fleet.mcvfs.run(*common, "--read-only", "--publish-to", f"{nobody}/org/fleet", "--sign-key", str(key),
                        f"{nobody}/{REPO}", str(mnt), env={"COSIGN_PASSWORD": ""})
    assert r.rc != 0 and "--publish-to needs a writable mount (not --read-only)" in r.stderr, str(r)
    assert "password" not in r.stderr.lower() and "connect" not in r.stderr.lower(), str(r)
    r = fleet.mcvfs.run(*common, "--refresh-interval", "5", f"{nobody}/{REPO}:v1", str(mnt))
    assert r.rc != 0 and f"--refresh-interval refreshes a repository's tags; {nobody}/{REPO}:v1 names one image" \
        in r.stderr, str(r)
    assert "connect" not in r.stderr.lower(), str(r)


def test_a_node_service_publishes_signed_from_its_environment_as_systemd_and_the_daemonset_set_it(fleet: Fleet):
    """MCVFS_PUBLISH_TO, MCVFS_PUBLISH_INTERVAL, MCVFS_SIGN_KEY and MCVFS_REFRESH_INTERVAL are what the DaemonSet's
    ConfigMap and systemd's NAME.conf and fleet.conf drop-in set; the password comes from COSIGN_PASSWORD."""
    key, pub = key_pair(fleet.mcvfs, fleet.root / "keys", "pw")
    service = Mcvfs(fleet.root / "service-home")
    service.env.update({"MCVFS_PUBLISH_TO": fleet.repo, "MCVFS_PUBLISH_INTERVAL": "0.5", "MCVFS_SIGN_KEY": str(key),
                        "MCVFS_REFRESH_INTERVAL": "1", "COSIGN_PASSWORD": "pw"})
    node = Node("svc", MountPool(service).mount(fleet.repo, fleet.root / "mnt-svc", fleet.root / "cache-svc",
                                                "--gpu", "cuda:90"), fleet.root / "home-svc")
    try:
        node.compile([2])
        status = wait_for(lambda: (s := node.status()["service"])["publishing"]["imagesPushed"] == 1 and s,
                          guard=60, what="the service's publish")
        assert status["publishing"]["signingKey"].startswith("sha256:") and status["refresh"]["intervalSeconds"] == 1
        (tag,) = fleet.fleet_tags()
        r = fleet.run("verify", "--plain-http", "--key", str(pub), f"{fleet.repo}:{tag}")
        assert r.rc == 0, str(r)
    finally:
        node.mount.close()


def test_the_systemd_drop_in_for_signing_installs_and_verifies(tmp_path):
    analyze = require_tool("systemd-analyze")
    binary = os.environ["MCVFS_BIN"]
    dest = tmp_path / "root"
    out = subprocess.run([str(REPO_ROOT / "scripts" / "install"), "--destdir", str(dest), "--binary", binary,
                          "--no-reload"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    drop_in = (dest / "usr/local/share/doc/mcvfs/fleet.conf").read_text()
    for line in ("LoadCredential=cosign.key:/etc/mcvfs/%i.cosign.key", "Environment=MCVFS_SIGN_KEY=%d/cosign.key",
                 "EnvironmentFile=/etc/mcvfs/%i.signing"):
        assert line in drop_in.splitlines(), line
    conf = (dest / "etc/mcvfs/example.conf").read_text()
    for key in ("MCVFS_REFRESH_INTERVAL=", "MCVFS_PUBLISH_TO=", "MCVFS_PUBLISH_INTERVAL="):
        assert any(line.startswith(key) for line in conf.splitlines()), key
    verify = tmp_path / "verify"
    (verify / "mcvfs@triton.service.d").mkdir(parents=True)
    unit = (dest / "etc/systemd/system/mcvfs@.service").read_text()
    (verify / "mcvfs@triton.service").write_text(unit.replace("/usr/local/bin/mcvfs", str(dest / "usr/local/bin/mcvfs")))
    (verify / "mcvfs@triton.service.d" / "fleet.conf").write_text(drop_in + "\n")
    out = subprocess.run([analyze, "verify", "mcvfs@triton.service"], capture_output=True, text=True, timeout=120,
                         cwd=verify)
    # systemd-analyze reports unknown keys and bad values as warnings only: any output is a failure here.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), (out.stdout, out.stderr)
