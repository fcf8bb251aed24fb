"""End-to-end: the node daemon against hostile local users (issue 21, deliveries 2, 3, 7 and 8).

Each attack runs as a real other uid against a real mount of a real registry's image: a user who can reach their
own upper on disk (an `--upper` root others may traverse, as a DaemonSet's hostPath or the old systemd state
directory allowed) plants links, FIFOs and huge sparse files there; a user who could open the cache's lock files
would freeze every mount. What is asserted is what the daemon did (nothing outside the upper touched, memory,
file modes, an error instead of a hang), never how fast; timeouts are hang guards.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from support.mcvfs import Mcvfs
from support.mounts import Mounted, probe, probe_json, run_guarded
from support.registry import Registry, require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
UNIT = REPO_ROOT / "systemd" / "mcvfs@.service"
UID_A, UID_B = 1000, 1001
GUARD = 120  # seconds: a hang guard only
RSS_BOUND = 300 << 20


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("hostile-node")
    with Registry(root / "registry") as registry:
        ref = f"{registry.host}/e2e/hostile:cuda-sm90"
        r = Mcvfs(root / "home").run("push", "--plain-http", str(FIXTURE), ref, timeout=600)
        assert r.rc == 0, r
        yield ref


@pytest.fixture
def world():
    """A directory other uids can traverse (pytest's temp dirs are 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="mcvfs-hostile-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    for m in Path("/proc/self/mountinfo").read_text().splitlines():
        assert str(d) not in m.split(" ")[4], f"a mount was left under {d}"
    shutil.rmtree(d, ignore_errors=True)


def kernel_dir(mnt: Path) -> Path:
    keys = sorted(p for p in mnt.iterdir() if not p.name.startswith("."))
    assert keys, "the image shows no kernel directory"
    return keys[0]


def as_user(uid: int, code: str, **kw):
    return probe_json(code, user=uid, **kw)


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def tree(path: Path) -> dict[str, str]:
    """Every entry under `path` with its type, owner and mode: what an attack must leave as it was."""
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = f"{st.st_mode:o} {st.st_uid}"
    return out


# -- Deliver 2: the work directory a user could swap for a link --------------------------------------------------

def test_a_work_directory_link_in_an_upper_creates_and_deletes_nothing_where_it_points(image, world, mounts):
    """The old daemon reached `<upper>/.mcvfs-work` by path: a user who made it a link to a root-only directory got a
    file of theirs created there, crashed the daemon for everyone, and its next start deleted the directory's files."""
    uppers = world / "uppers"
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90", "--upper", str(uppers))
    key = kernel_dir(mnt.path)
    victim = world / "root-only"
    victim.mkdir(mode=0o700)
    (victim / "precious").write_text("root's")
    before = tree(victim)

    # uid A writes once (its upper appears), then swaps the work directory's old name in it for a link.
    attack = as_user(UID_A, f"""
upper = {str(uppers)!r} + "/{UID_A}"
with open({str(key / "a.bin")!r}, "wb") as f:
    f.write(b"first")
work = upper + "/.mcvfs-work"
if os.path.lexists(work):
    os.rename(work, upper + "/old-work")
os.symlink({str(victim)!r}, work)
out = []
for name in ("b.bin", "c.bin"):
    with open({str(key)!r} + "/" + name, "wb") as f:
        f.write(b"by A")
    out.append(open({str(key)!r} + "/" + name, "rb").read().decode())
print(json.dumps(out))""")
    assert attack == ["by A", "by A"], attack
    assert tree(victim) == before
    # The daemon serves everyone still: another user reads an image file and writes one of their own.
    other = as_user(UID_B, f"""
name = sorted(n for n in os.listdir({str(key)!r}) if not n.endswith(".bin"))[0]
data = open({str(key)!r} + "/" + name, "rb").read()
with open({str(key / "b.bin")!r}, "wb") as f:
    f.write(b"by B")
print(json.dumps([len(data) > 0, open({str(key / "b.bin")!r}, "rb").read().decode()]))""")
    assert other == [True, "by B"], other

    # A restart's recovery deletes nothing through the link (and removes the link itself).
    mnt.unmount()
    again = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90", "--upper", str(uppers))
    assert as_user(UID_A, f"print(json.dumps(open({str(key / 'c.bin')!r}, 'rb').read().decode()))") == "by A"
    assert tree(victim) == before
    assert not os.path.lexists(uppers / str(UID_A) / ".mcvfs-work")
    # The daemon's own work directories: beside the uppers, root's, closed to everyone.
    work = uppers / ".mcvfs-work"
    assert (work.stat().st_uid, work.stat().st_mode & 0o777) == (0, 0o700)
    assert (work / str(UID_A)).stat().st_mode & 0o777 == 0o700
    again.unmount()


# -- Deliver 3: bounded reads of what a user put in their upper ----------------------------------------------------

def test_a_huge_sparse_group_file_and_a_fifo_in_an_upper_answer_at_once_and_cost_no_memory(image, world, mounts):
    """Relocation read a whole group file on every getattr: `truncate -s 4G K/__grp__x.json; stat ...` got the daemon
    OOM-killed. A FIFO named like a group file parked a FUSE thread on open."""
    uppers = world / "uppers"
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90", "--upper", str(uppers))
    key = kernel_dir(mnt.path)
    result = as_user(UID_A, f"""
key, upper = {str(key)!r}, {str(uppers)!r} + "/{UID_A}/" + {key.name!r}
with open(key + "/__grp__small.json", "w") as f:
    f.write('{{"child_paths": {{}}}}')
os.truncate(upper + "/__grp__small.json", 4 << 30)  # on disk, behind the daemon's back: 4 GiB, sparse
os.rename(upper + "/__grp__small.json", upper + "/__grp__x.json")
os.mkfifo(upper + "/__grp__fifo.json")
os.mkfifo(upper + "/vllm_compile_cache.py")
def head(p):
    with open(p, "rb") as f:
        return len(f.read(16))
print(json.dumps([
    [os.stat(key + "/__grp__x.json").st_size for _ in range(3)][-1],  # each stat would have read it whole
    attempt(head, key + "/__grp__x.json"),
    attempt(lambda p: os.stat(p).st_size, key + "/__grp__fifo.json"),
    attempt(head, key + "/__grp__fifo.json"),
    attempt(lambda p: os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK)), key + "/vllm_compile_cache.py"),
    attempt(head, key + "/vllm_compile_cache.py"),
]))""", timeout=GUARD)
    assert result == [4 << 30, ["ok", 16], ["ok", 0], ["err", "EINVAL"], ["err", "EINVAL"], ["err", "EINVAL"]], result
    assert vm_hwm(mnt.pid) < RSS_BOUND, f"daemon peak RSS {vm_hwm(mnt.pid) >> 20} MiB"
    assert as_user(UID_B, f"print(json.dumps(len(os.listdir({str(key)!r}))))") > 0


# -- Deliver 3: locks no other user can hold, and waits that end -------------------------------------------------

def test_lock_files_are_closed_to_other_users_and_a_held_lock_fails_a_read_within_the_budget(image, world, mounts):
    """`leases/.lock` was 0644 in 0755 directories: `flock -x` on a read-only descriptor froze the first read of every
    unfetched kernel, new mounts and `cache ls`, with no time limit."""
    cache = world / "cache"
    cache.mkdir(mode=0o755)  # as systemd's StateDirectoryMode=0755 left it: the daemon closes it
    os.chmod(cache, 0o755)
    mnt = mounts.mount(image, world / "mnt", cache, "--gpu", "cuda:90", "--prefetch", "none", "--timeout", "2")
    key = kernel_dir(mnt.path)
    # The largest file: its bytes are fetched on first open (group files come with the tree).
    files = sorted((p for p in key.iterdir() if p.is_file()), key=lambda p: -p.stat().st_size)
    lock = cache / "leases" / ".lock"
    assert [oct(p.stat().st_mode & 0o777) for p in (cache, cache / "leases", lock)] == ["0o700", "0o700", "0o600"]
    assert as_user(UID_A, f"print(json.dumps(attempt(lambda p: os.close(os.open(p, os.O_RDONLY)), {str(lock)!r})))") \
        == ["err", "EACCES"]

    # Root (a stuck `cache prune`, a careless admin) holds it: the read fails once its budget is spent.
    # -o: the lock stays with flock itself, not with the `sleep` it runs, so killing flock releases it.
    holder = subprocess.Popen([require_tool("flock"), "-x", "-o", str(lock), "sleep", "600"], start_new_session=True)
    try:
        probe(f"import fcntl, time\nwhile True:\n    f = open({str(lock)!r})\n"
              f"    try:\n        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB); f.close(); time.sleep(0.05)\n"
              f"    except OSError:\n        break", timeout=GUARD)
        read = run_guarded(["cat", str(files[0])], timeout=GUARD, what="a read while root holds leases/.lock")
        assert read.returncode != 0 and "Input/output error" in read.stderr, read
        assert "still held by another process" in mnt.daemon_log(), mnt.daemon_log()[-3000:]
    finally:
        os.killpg(holder.pid, 9)
        holder.wait()
    assert files[0].read_bytes(), "the read fails while the lock is held, not after"


# -- Deliver 7: each user sees only their own --------------------------------------------------------------------

def test_status_and_hot_set_show_a_user_only_their_own(image, world, mounts):
    uppers = world / "uppers"
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90", "--upper", str(uppers))
    key = kernel_dir(mnt.path)
    for uid in (UID_A, UID_B):
        as_user(uid, f"""
with open({str(key)!r} + "/mine-{uid}.bin", "wb") as f:
    f.write(b"x")
print(json.dumps(sorted(os.listdir({str(key)!r}))[0]))""")
    next(p for p in key.iterdir() if p.is_file() and not p.name.startswith("mine")).read_bytes()
    control = mnt.path / ".mcvfs"
    seen = as_user(UID_A, f"""
status = json.loads(open({str(control / "status.json")!r}).read())
print(json.dumps([[u["name"] for u in status["uppers"]],
                  attempt(lambda p: open(p).read(), {str(control / "hot-set")!r}),
                  attempt(lambda p: open(p).read(), {str(control / "hot-sets.json")!r})]))""")
    assert seen == [[str(UID_A)], ["err", "EACCES"], ["err", "EACCES"]], seen
    full = mnt.status()
    assert {str(UID_A), str(UID_B)} <= {u["name"] for u in full["uppers"]}, full["uppers"]  # root's own too
    assert key.name in (control / "hot-set").read_text().split()

    # `mcvfs status` works for the user too (a copy of the binary they may run: the clone may be 0700).
    binary = world / "mcvfs"
    shutil.copy(mnt.mcvfs.binary, binary)
    os.chmod(binary, 0o755)
    out = subprocess.run([require_tool("setpriv"), f"--reuid={UID_A}", f"--regid={UID_A}", "--clear-groups",
                          str(binary), "status", "--json", str(mnt.path)],
                         capture_output=True, text=True, timeout=GUARD, cwd="/", env={"HOME": str(world)})
    assert out.returncode == 0, out.stderr
    [doc] = json.loads(out.stdout)["mounts"]
    assert [u["name"] for u in doc["uppers"]] == [str(UID_A)], out.stdout


# -- Deliver 8: ownership under the systemd unit's capabilities --------------------------------------------------

class CappedMcvfs(Mcvfs):
    """mcvfs as the shipped unit runs it: root with the unit's CapabilityBoundingSet and no more."""

    def argv(self, *args: str) -> list[str]:
        text = UNIT.read_text()
        caps = re.search(r"^CapabilityBoundingSet=(.*)$", text, re.M).group(1).split()
        allowed = ",".join(["-all", *("+" + c.removeprefix("CAP_").lower() for c in caps)])
        return [require_tool("setpriv"), f"--bounding-set={allowed}", "--inh-caps=-all", "--", *super().argv(*args)]


def test_a_file_a_user_creates_under_the_units_capabilities_is_theirs_and_they_can_touch_it(image, world, mounts,
                                                                                          tmp_path):
    mnt = Mounted(CappedMcvfs(tmp_path / "home"), image, world / "mnt", world / "cache", "--gpu", "cuda:90")
    mounts.mounts.append(mnt)
    mnt.start()
    caps = int(next(l for l in Path(f"/proc/{mnt.pid}/status").read_text().splitlines()
                    if l.startswith("CapBnd:")).split()[1], 16)
    assert caps & (1 << 21) and not caps & (1 << 12), f"the daemon runs with CapBnd {caps:x}, not the unit's"
    key = kernel_dir(mnt.path)
    result = as_user(UID_A, f"""
p = {str(key)!r} + "/made-by-a.bin"
with open(p, "wb") as f:
    f.write(b"a")
out = [os.stat(p).st_uid, os.stat(p).st_gid]
os.utime(p, None)           # touch
os.utime(p, (1000, 2000))   # touch -d: only the owner may
os.chmod(p, 0o600)
st = os.stat(p)
print(json.dumps(out + [int(st.st_mtime), oct(st.st_mode & 0o777)]))""")
    assert result == [UID_A, UID_A, 2000, "0o600"], result


# -- Issue 21: status.json served without walking anyone's upper -------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_stat_of_the_status_never_walks_a_large_upper(image, world, mounts):
    uppers = world / "uppers"
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90", "--upper", str(uppers))
    key = kernel_dir(mnt.path)
    as_user(UID_A, f"""
with open({str(key)!r} + "/mine.bin", "wb") as f:
    f.write(b"x")
print(json.dumps(0))""")
    # User A's upper holds 20,000 files (as a user who reaches their upper on disk makes them in a moment).
    crowd = uppers / str(UID_A) / key.name / "crowd"
    crowd.mkdir()
    for i in range(20_000):
        (crowd / f"f{i}").touch()
    status = mnt.path / ".mcvfs" / "status.json"
    stats = 20
    before = cpu_seconds(mnt.pid)
    as_user(UID_B, f"""
for _ in range({stats}):
    os.stat({str(status)!r})
print(json.dumps(0))""")
    spent = cpu_seconds(mnt.pid) - before
    # A walk of 20,000 files per stat costs the daemon over a second each; a served value costs next to nothing
    # (one bounded walk in the background at most).
    assert spent < 5, f"{stats} stats of status.json by another uid cost the daemon {spent:.1f} s of CPU"
    # The sizes still come, measured in the background, with their age.
    status = mnt.status_measured_after(time.time())
    (upper,) = [u for u in status["uppers"] if u["name"] == str(UID_A)]
    assert upper["files"] >= 1 and status["uppersAge"] >= 0, status


# -- Issue 21: export never follows a link a pod put in its upper ------------------------------------------------

RACER = """
import os, sys
key, secret = sys.argv[1], sys.argv[2]
names = [os.path.join(key, f"swap{i}.bin") for i in range(50)]
while True:
    for p in names:
        with open(p + ".new", "wb") as f:
            f.write(b"x")
        os.replace(p + ".new", p)
        os.symlink(secret, p + ".new")
        os.replace(p + ".new", p)
"""


def test_export_never_follows_a_link_in_an_upper_even_one_swapped_in_while_it_copies(image, world, mounts, tmp_path):
    mnt = mounts.mount(image, world / "mnt", world / "cache", "--gpu", "cuda:90")
    key = kernel_dir(mnt.path)
    secret = world / "host-secret"
    secret.write_bytes(b"HOST-SECRET " * 100)
    os.chmod(secret, 0o600)
    # A root-uid pod, through the mount only: a link to a host file, and files it keeps swapping for such links
    # while root exports its upper.
    (key / "plain-link.bin").symlink_to(secret)
    racer = subprocess.Popen([sys.executable, "-c", RACER, str(key), str(secret)], cwd="/")
    try:
        for attempt in range(8):
            export = tmp_path / f"export{attempt}"
            r = mnt.mcvfs.run("export", str(mnt.path), str(export), "--upper-only", timeout=GUARD)
            assert r.rc == 0, r
            assert (export / key.name / "plain-link.bin").is_symlink()
            leaked = [p for p in export.rglob("*") if p.is_file() and not p.is_symlink()
                      and b"HOST-SECRET" in p.read_bytes()]
            assert not leaked, f"export copied a host file through a link: {leaked}"
    finally:
        racer.kill()
        racer.wait()
