"""buildah and podman as these machines (and CI machines like them) can run them: Debian's packages with runc,
cgroupfs, the vfs storage driver, host networking and no default ulimits (the sandbox's hard limits are lower
than containers.conf's defaults), in a storage of the suite's own under .build/containers, so images built
once (Debian bases, the Swift builder) are reused by later runs. Base images are made with debootstrap from
Debian's archive, the one registry these machines reach; each is named after a digest of its recipe."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from .registry import require_tool

REPO_ROOT = Path(__file__).resolve().parents[3]
SUITE = "bookworm"
DEBIAN = "http://deb.debian.org/debian"
BUILD_GUARD = 1800  # seconds: hang guards for image builds (debootstrap, a release build), never assertions

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class Containers:
    """Runs buildah, podman and scripts/build-image against the suite's storage."""

    def __init__(self, root: Path = REPO_ROOT / ".build" / "containers"):
        for tool in ("buildah", "podman", "runc", "debootstrap"):
            require_tool(tool)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        conf = root / "containers.conf"
        storage = root / "storage.conf"
        run = Path("/run/mcvfs-e2e-containers") / hashlib.sha256(str(root).encode()).hexdigest()[:12]
        _write_if_changed(conf, CONTAINERS_CONF)
        _write_if_changed(storage, f'[storage]\ndriver = "vfs"\ngraphroot = "{root / "storage"}"\n'
                                   f'runroot = "{run}"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}

    def run(self, argv: list[str], *, timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env,
                                 stdin=subprocess.DEVNULL, **kw)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(argv)} hung past its {timeout}s guard\n{e.stderr}") from None
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def buildah(self, *args: str, timeout: float = BUILD_GUARD, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["buildah", *args], timeout=timeout, check=check)

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["podman", *args], timeout=timeout, check=check)

    def has_image(self, name: str) -> bool:
        return self.buildah("inspect", "--type", "image", name, check=False, timeout=120).returncode == 0

    def image_config(self, name: str) -> dict:
        return json.loads(self.buildah("inspect", "--type", "image", name, timeout=120).stdout)

    def remove_container(self, name: str) -> None:
        self.podman("rm", "--force", "--time", "0", name, check=False)

    # -- Debian images made here ---------------------------------------------------------------------------

    def debian_image(self, name: str, packages: list[str], *, recipe: str = "", extra=None) -> str:
        """A debootstrap minbase image of SUITE with `packages`, slimmed like Debian's own -slim images, with the
        suite's updates and security archives configured; `extra(rootfs)` adds to it before it is committed.
        Built once per recipe (`recipe` names what `extra` does)."""
        key = hashlib.sha256(json.dumps([SUITE, DEBIAN, sorted(packages), recipe]).encode()).hexdigest()[:16]
        image = f"localhost/{name}:{SUITE}-{key}"
        if self.has_image(image):
            return image
        work = self.root / f"build-{name}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rootfs = work / "rootfs"
        argv = ["debootstrap", "--variant=minbase"]
        if packages:
            argv.append("--include=" + ",".join(sorted(packages)))
        self.run([*argv, SUITE, str(rootfs), DEBIAN], timeout=BUILD_GUARD)
        (rootfs / "etc/apt/sources.list").write_text(
            f"deb {DEBIAN} {SUITE} main\ndeb {DEBIAN} {SUITE}-updates main\n"
            f"deb {DEBIAN}-security {SUITE}-security main\n")
        for path in ("var/lib/apt/lists", "var/cache/apt/archives", "usr/share/doc", "usr/share/man", "dev"):
            for child in (rootfs / path).glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()
        if extra:
            extra(rootfs)
        layer = work / "rootfs.tar"
        self.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(layer), "."], timeout=BUILD_GUARD)
        shutil.rmtree(rootfs)
        ctr = self.buildah("from", "scratch").stdout.strip()
        try:
            self.buildah("add", ctr, str(layer), "/")
            self.buildah("config", "--cmd", '["/bin/sh"]', ctr)
            self.buildah("commit", "-q", ctr, image)
        finally:
            self.buildah("rm", ctr, check=False)
            shutil.rmtree(work, ignore_errors=True)
        return image

    def debian_slim(self) -> str:
        """Stands in for docker.io/library/debian:bookworm-slim: minbase with nothing added."""
        return self.debian_image("debian-slim", [])

    def swift_builder(self) -> str:
        """Stands in for docker.io/library/swift:6.x-bookworm: the packages Swift's official bookworm image
        installs, this machine's toolchain in /usr (as that image has it), and this machine's way to reach
        GitHub offline: git's `insteadOf` pointing at local mirrors of every package the build resolves."""
        toolchain = Path("/opt/swift/usr")
        mirrors = swift_package_mirrors(toolchain / "bin" / "swift")
        for path in (toolchain / "bin" / "swift", *mirrors):
            assert path.exists(), f"{path} is missing: the Swift builder stand-in is made from it"
        version = subprocess.run([str(toolchain / "bin" / "swift"), "--version"], capture_output=True,
                                 text=True).stdout
        packages = ["binutils", "git", "libc6-dev", "libcurl4-openssl-dev", "libedit2", "libgcc-12-dev",
                    "libpython3-dev", "libsqlite3-0", "libstdc++-12-dev", "libxml2-dev", "libncurses-dev",
                    "libz3-dev", "pkg-config", "tzdata", "zlib1g-dev", "ca-certificates"]
        # What an image for building needs of the toolchain: not the debugger, the language servers or docc.
        skip = ["*lldb*", "*sourcekit*", "*clangd*", "*docc*", "*repl_swift*"]

        def add_toolchain(rootfs: Path) -> None:
            excludes = " ".join(f"--exclude='{pattern}'" for pattern in skip)
            self.run(["bash", "-o", "pipefail", "-c",
                      f"tar -C {toolchain.parent} {excludes} -cf - usr | "
                      f"tar -C {rootfs} --keep-directory-symlink -xf -"], timeout=BUILD_GUARD)
            for mirror in mirrors:
                shutil.copytree(mirror, rootfs / "opt/swift-packages" / mirror.parent.name / mirror.name,
                                symlinks=True)
            (rootfs / "etc/gitconfig").write_text(
                '[url "/opt/swift-packages/"]\n\tinsteadOf = https://github.com/\n')

        recipe = "toolchain " + version + " packages " + " ".join(str(m) for m in mirrors)
        return self.debian_image("swift-builder", packages, recipe=recipe, extra=add_toolchain)

    def python_consumer(self) -> str:
        """A workload image with Debian's Python (the one the test venv was made from: Triton comes from the
        venv, mounted read-only at its own path)."""
        return self.debian_image("python-consumer", ["python3", "libstdc++6", "zlib1g"])


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def venv_root() -> Path:
    """The test venv's real directory (.venv may be a symlink): containers mount it at the same path, since a
    venv's scripts name their interpreter by absolute path."""
    return (REPO_ROOT / ".venv").resolve()


def swift_package_mirrors(swift: Path) -> list[Path]:
    """This machine's local mirror (`/opt/swift-packages/OWNER/NAME.git`) of every package Package.swift resolves
    to, transitive ones included, as `swift package show-dependencies` lists them."""
    out = subprocess.run([str(swift), "package", "show-dependencies", "--format", "json"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=BUILD_GUARD)
    assert out.returncode == 0, out.stderr
    urls: set[str] = set()

    def walk(node: dict) -> None:
        for child in node.get("dependencies", []):
            urls.add(child["url"])
            walk(child)

    walk(json.loads(out.stdout))
    mirrors = []
    for url in sorted(urls):
        owner, name = url.removeprefix("https://github.com/").removesuffix(".git").split("/")[-2:]
        mirrors.append(Path("/opt/swift-packages") / owner / f"{name}.git")
    return mirrors
