"""What the trust tests sign and mount: marker images (which images a mount exposes is visible by name) and a
read-only mount that reports its status and log."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from .images import OCI_LAYER_TAR, RegistryAPI, mcv_labels, sha256_digest
from .mcvfs import Mcvfs

CUDA90 = Path(__file__).resolve().parents[2] / "Fixtures" / "triton-3.9.0" / "cuda-90"


def marker_image(api: RegistryAPI, repo: str, tag: str) -> tuple[str, int, str]:
    """A cache image whose one layer holds `io.triton.cache/<TAG>/marker`: which images a mount exposes is then
    visible by name. Labels are the cuda-90 fixture's (any cache image's labels would do)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("io.triton.cache", f"io.triton.cache/{tag.upper()}"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = f"image {tag}\n".encode()
        info = tarfile.TarInfo(f"io.triton.cache/{tag.upper()}/marker")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    layer = buf.getvalue()
    pushed = api.push_image(repo, tag, [(layer, OCI_LAYER_TAR)], labels=mcv_labels(CUDA90),
                            uncompressed_layers=[layer])
    return pushed["digest"], len(pushed["body"]), sha256_digest(layer)


def key_fingerprint(pem_file: Path) -> str:
    """sha256 of the DER SubjectPublicKeyInfo, as mcvfs (and Rekor) name keys."""
    key = serialization.load_pem_public_key(pem_file.read_bytes())
    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()



class Mount:
    def __init__(self, m: Mcvfs, cache: Path, mountpoint: Path):
        self.m, self.cache, self.mountpoint = m, cache, mountpoint
        self.pid: int | None = None

    def start(self, *args: str):
        self.mountpoint.mkdir(exist_ok=True)
        r = self.m.run("mount", "--plain-http", "--cache-dir", self.cache, "--gpu", "all", "--read-only",
                       *args, self.mountpoint)
        if r.rc == 0:
            self.pid = self.status()["pid"]
        return r

    def status(self) -> dict:
        return json.loads((self.mountpoint / ".mcvfs" / "status.json").read_text())

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.cache / "logs").glob("mount-*.log"))

    def stop(self):
        if self.pid is None:
            return
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.pid = None
