"""Cache images built and pushed the way third parties do.

`build_mcv_layout` makes an OCI layout with umoci holding one squashed layer laid out as Model Cache Vault
does (`io.triton.cache/<KEY>/...` + `io.triton.manifest/manifest.json`) and MCV's config labels;
`skopeo_push` copies a layout to a registry (OCI as is, Docker schema2, or zstd). `RegistryAPI` talks the
distribution API directly, for what skopeo would refuse or rewrite (an uncompressed layer, hostile tars,
an index, cosign-like artifacts) and for fast bulk tagging.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

import requests

from .registry import require_tool

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    require_tool(argv[0])
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=300, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


# -- what a Triton cache says about itself -------------------------------------------------------------------

def triton_manifest_entries(cache_dir: Path) -> list[dict]:
    """MCV's io.triton.manifest entries, from each kernel's `<name>.json` metadata (not the `__grp__` files)."""
    entries = []
    for meta in sorted(Path(cache_dir).glob("*/*.json")):
        if meta.name.startswith("__grp__"):
            continue
        data = json.loads(meta.read_text())
        target = data.get("target")
        if not isinstance(target, dict) or "hash" not in data:
            continue
        entries.append({
            "hash": data["hash"], "backend": target["backend"], "arch": target["arch"],
            "warp_size": target["warp_size"], "ptx_version": data.get("ptx_version"),
            "num_stages": data.get("num_stages"), "num_warps": data.get("num_warps"),
            "debug": data.get("debug", False), "dummy_key": meta.parent.name,
        })
    return entries


def summary_targets(entries: list[dict]) -> list[dict]:
    """Distinct targets, arch as a STRING as MCV writes it."""
    seen, targets = set(), []
    for e in entries:
        key = (e["backend"], str(e["arch"]), e["warp_size"])
        if key not in seen:
            seen.add(key)
            targets.append({"backend": key[0], "arch": key[1], "warp_size": key[2]})
    return targets


def target_strings(cache_dir: Path) -> list[str]:
    """The `backend:arch:warp` strings mcvfs prints for a cache's targets."""
    return [f"{t['backend']}:{t['arch']}:{t['warp_size']}" for t in summary_targets(triton_manifest_entries(cache_dir))]


def mcv_labels(cache_dir: Path) -> dict[str, str]:
    entries = triton_manifest_entries(cache_dir)
    size = sum(p.stat().st_size for p in Path(cache_dir).rglob("*") if p.is_file())
    summary = json.dumps({"targets": summary_targets(entries)}, separators=(",", ":"))
    return {
        "cache.triton.image/summary": summary,
        "cache.triton.image/entry-count": str(len(entries)),
        "cache.triton.image/cache-size-bytes": str(size),
        "cache.triton.image/variant": "multi",
        "model.cache.image/type": "triton",
        "model.cache.image/components": "triton",
        "model.cache.image/entry-count": str(len(entries)),
        "model.cache.image/cache-size-bytes": str(size),
        "model.cache.image/summary": summary,
    }


def stage_mcv_tree(cache_dir: Path, dest: Path) -> Path:
    """The directory tree MCV puts in its one layer."""
    shutil.copytree(cache_dir, dest / "io.triton.cache", symlinks=True)
    (dest / "io.triton.manifest").mkdir(parents=True)
    (dest / "io.triton.manifest" / "manifest.json").write_text(
        json.dumps({"triton": triton_manifest_entries(cache_dir)}, indent=2))
    return dest


# -- OCI layouts with umoci ---------------------------------------------------------------------------------

@dataclass
class Layout:
    path: Path
    tag: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"oci:{self.path}:{self.tag}"

    def manifest(self) -> dict:
        index = json.loads((self.path / "index.json").read_text())
        for d in index["manifests"]:
            if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == self.tag:
                return json.loads(self.blob(d["digest"]))
        raise KeyError(self.tag)

    def blob(self, digest: str) -> bytes:
        return (self.path / "blobs" / digest.replace(":", "/")).read_bytes()


def build_umoci_layout(tree: Path, layout_dir: Path, *, labels: dict[str, str] | None, tag: str = "latest") -> Layout:
    """One squashed layer holding `tree` (relative names, as a container build makes), plus config labels."""
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    bundle = layout_dir.parent / (layout_dir.name + ".bundle")
    _run("umoci", "init", "--layout", str(layout_dir))
    _run("umoci", "new", "--image", f"{layout_dir}:{tag}")
    _run("umoci", "unpack", *rootless, "--image", f"{layout_dir}:{tag}", str(bundle))
    rootfs = bundle / "rootfs"
    for child in tree.iterdir():
        if child.is_dir():
            shutil.copytree(child, rootfs / child.name, symlinks=True)
        else:
            shutil.copy2(child, rootfs / child.name)
    _run("umoci", "repack", "--image", f"{layout_dir}:{tag}", str(bundle))
    shutil.rmtree(bundle, ignore_errors=True)
    if labels:
        args = []
        for k, v in labels.items():
            args += ["--config.label", f"{k}={v}"]
        _run("umoci", "config", "--image", f"{layout_dir}:{tag}", *args)
    _run("umoci", "gc", "--layout", str(layout_dir))
    return Layout(layout_dir, tag, dict(labels or {}))


def build_mcv_layout(cache_dir: Path, workdir: Path, *, labels: bool = True, tag: str = "latest") -> Layout:
    workdir.mkdir(parents=True, exist_ok=True)
    tree = stage_mcv_tree(Path(cache_dir), workdir / "tree")
    layout = build_umoci_layout(tree, workdir / "layout", labels=mcv_labels(cache_dir) if labels else None, tag=tag)
    shutil.rmtree(tree)
    return layout


def build_plain_layout(workdir: Path, *, tag: str = "latest") -> Layout:
    """An ordinary, label-less image: not a cache image."""
    tree = workdir / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("not a cache\n")
    return build_umoci_layout(tree, workdir / "layout", labels=None, tag=tag)


def zstd_layout(layout: Layout, workdir: Path) -> Layout:
    """The same image with its layer recompressed to zstd. Done layout-to-layout: pushing to a registry with
    `--dest-compress-format zstd` reuses the gzip blob skopeo already knows from its blob-info cache."""
    dest = workdir / "layout-zstd"
    _run("skopeo", "copy", "-q", "--dest-compress", "--dest-compress-format", "zstd", layout.ref, f"oci:{dest}:{layout.tag}")
    return Layout(dest, layout.tag, layout.labels)


def skopeo_push(layout: Layout, host: str, repo: str, tag: str, *, creds: str | None = None,
                fmt: str | None = None) -> str:
    """`skopeo copy oci:LAYOUT:tag docker://HOST/REPO:TAG`; fmt "v2s2" for Docker schema2. Returns the digest."""
    args = ["skopeo", "copy", "-q", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    if fmt:
        args += ["--format", fmt]
    digestfile = layout.path.parent / f".digest-{os.getpid()}-{abs(hash((host, repo, tag)))}"
    args += ["--digestfile", str(digestfile), layout.ref, f"docker://{host}/{repo}:{tag}"]
    _run(*args)
    digest = digestfile.read_text().strip()
    digestfile.unlink()
    return digest


# -- raw tars ----------------------------------------------------------------------------------------------

def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_of_tree(tree: Path) -> bytes:
    """A deterministic uncompressed tar of a directory, relative names, like a squashed build layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path in sorted(tree.rglob("*")):
            info = t.gettarinfo(str(path), arcname=str(path.relative_to(tree)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    t.addfile(info, f)
            else:
                t.addfile(info)
    return buf.getvalue()


def hostile_tar() -> bytes:
    """A layer a hostile publisher might push: path traversal, absolute names, escaping symlinks, a device."""
    def entry(name, kind=tarfile.REGTYPE, data=None, link=""):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = 0o644 if kind == tarfile.REGTYPE else 0o777
        info.linkname = link
        if kind == tarfile.CHRTYPE:
            info.devmajor, info.devminor = 1, 3
        if data is not None:
            info.size = len(data)
        return info, data
    key = "io.triton.cache/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    return tar_bytes([
        entry("io.triton.cache/", tarfile.DIRTYPE),
        entry(key + "/", tarfile.DIRTYPE),
        entry(key + "/ok.json", data=b'{"ok": true}\n'),
        entry("../escape", data=b"escaped\n"),
        entry("io.triton.cache/../../escape2", data=b"escaped\n"),
        entry("/abs", data=b"absolute\n"),
        entry(key + "/passwd", tarfile.SYMTYPE, link="/etc/passwd"),
        entry(key + "/up", tarfile.SYMTYPE, link="../../x"),
        entry(key + "/hard", tarfile.LNKTYPE, link="/etc/shadow"),
        entry(key + "/null", tarfile.CHRTYPE),
    ])


# -- the distribution API, directly ------------------------------------------------------------------------

class RegistryAPI:
    """A minimal registry client: Basic or Bearer (token flow) auth, monolithic blob upload, manifest PUT."""

    def __init__(self, host: str, *, creds: str | None = None):
        self.base = f"http://{host}"
        self.creds = tuple(creds.split(":", 1)) if creds else None
        self.session = requests.Session()
        self._bearer: dict[str, str] = {}  # scope -> token
        self._basic = False

    def _auth_header(self, scope: str | None) -> str | None:
        if scope in self._bearer:
            return f"Bearer {self._bearer[scope]}"
        if self._basic and self.creds:
            return "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()
        return None

    def _authenticate(self, challenge: str, scope: str | None) -> bool:
        if challenge.startswith("Basic"):
            self._basic = True
            return self.creds is not None
        if challenge.startswith("Bearer"):
            params = dict(p.split("=", 1) for p in _split_challenge(challenge[len("Bearer "):]))
            query = {"service": params.get("service", "")}
            if scope:
                query["scope"] = scope
            token_resp = requests.get(params["realm"], params=query, auth=self.creds, timeout=30)
            token_resp.raise_for_status()
            body = token_resp.json()
            self._bearer[scope] = body.get("token") or body["access_token"]
            return True
        return False

    def _request(self, method: str, url: str, *, scope: str | None = None, **kw) -> requests.Response:
        url = urljoin(self.base, url)
        headers = dict(kw.pop("headers", {}))
        for attempt in range(2):
            auth = self._auth_header(scope)
            if auth:
                headers["Authorization"] = auth
            resp = self.session.request(method, url, headers=headers, timeout=60, allow_redirects=False, **kw)
            if resp.status_code != 401 or attempt or not self._authenticate(resp.headers.get("WWW-Authenticate", ""), scope):
                return resp
        return resp

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        scope = f"repository:{repo}:pull,push"
        head = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
        if head.status_code == 200:
            return digest
        start = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
        if start.status_code != 202:
            raise RuntimeError(f"upload start {start.status_code}: {start.text}")
        location = urljoin(self.base, start.headers["Location"])
        parsed = urlparse(location)
        query = parse_qs(parsed.query)
        query["digest"] = [digest]
        put_url = parsed._replace(query=urlencode(query, doseq=True)).geturl()
        put = self._request("PUT", put_url, scope=scope, data=data,
                            headers={"Content-Type": "application/octet-stream"})
        if put.status_code != 201:
            raise RuntimeError(f"blob PUT {put.status_code}: {put.text}")
        return digest

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self._request("PUT", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull,push",
                             data=body, headers={"Content-Type": media_type})
        if resp.status_code != 201:
            raise RuntimeError(f"manifest PUT {repo}:{reference} {resp.status_code}: {resp.text}")
        return sha256_digest(body)

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) as the registry serves them."""
        resp = self._request("GET", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                             headers={"Accept": ACCEPT})
        resp.raise_for_status()
        return resp.content, resp.headers["Content-Type"], resp.headers.get("Docker-Content-Digest", sha256_digest(resp.content))

    def get_blob(self, repo: str, digest: str) -> bytes:
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        if resp.status_code in (301, 302, 303, 307, 308):
            resp = requests.get(urljoin(self.base, resp.headers["Location"]), timeout=60)
        resp.raise_for_status()
        return resp.content

    def tags(self, repo: str) -> list[str]:
        resp = self._request("GET", f"/v2/{repo}/tags/list", scope=f"repository:{repo}:pull")
        resp.raise_for_status()
        return resp.json().get("tags") or []

    def push_layout(self, layout: Layout, repo: str, tag: str) -> str:
        """Pushes an OCI layout's image byte for byte (skopeo may convert or recompress)."""
        manifest = layout.manifest()
        for d in [manifest["config"], *manifest["layers"]]:
            self.push_blob(repo, layout.blob(d["digest"]))
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return self.push_manifest(repo, tag, body, manifest.get("mediaType", OCI_MANIFEST))

    def push_image(self, repo: str, tag: str, layers: list[tuple[bytes, str]], *, labels: dict[str, str] | None,
                   config_media_type: str = OCI_CONFIG, manifest_media_type: str = OCI_MANIFEST,
                   uncompressed_layers: list[bytes] | None = None, annotations: dict | None = None) -> dict:
        """Pushes an image made of the given (blob, mediaType) layers; returns {digest, manifest, body}."""
        diff_ids = [sha256_digest(u) for u in (uncompressed_layers or [gzip.decompress(b) if m.endswith("gzip") else b for b, m in layers])]
        config = {"architecture": "amd64", "os": "linux", "config": {"Labels": labels} if labels else {},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        manifest: dict = {"schemaVersion": 2}
        if manifest_media_type == DOCKER_MANIFEST or manifest_media_type == OCI_MANIFEST:
            manifest["mediaType"] = manifest_media_type
        manifest["config"] = {"mediaType": config_media_type, "digest": self.push_blob(repo, config_bytes),
                              "size": len(config_bytes)}
        manifest["layers"] = [{"mediaType": m, "digest": self.push_blob(repo, b), "size": len(b)} for b, m in layers]
        if annotations:
            manifest["annotations"] = annotations
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = self.push_manifest(repo, tag, body, manifest_media_type)
        return {"digest": digest, "manifest": manifest, "body": body}

    def push_index(self, repo: str, tag: str, manifests: list[dict], media_type: str = OCI_INDEX) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests},
                          separators=(",", ":")).encode()
        return self.push_manifest(repo, tag, body, media_type)

    def push_cosign_like(self, repo: str, image_digest: str, suffix: str) -> str:
        """A cosign-style artifact under `sha256-<hex>.<suffix>` (sig, att, sbom), with cosign's layer types."""
        if suffix == "sig":
            media_type = COSIGN_SIMPLESIGNING
            payload = {"critical": {"identity": {"docker-reference": repo},
                                    "image": {"docker-manifest-digest": image_digest},
                                    "type": "cosign container image signature"}, "optional": None}
        elif suffix == "att":
            media_type = "application/vnd.dsse.envelope.v1+json"
            payload = {"payloadType": "application/vnd.in-toto+json", "payload": "", "signatures": []}
        else:
            media_type = "text/spdx+json"
            payload = {"spdxVersion": "SPDX-2.3", "name": image_digest}
        data = json.dumps(payload).encode()
        tag = image_digest.replace("sha256:", "sha256-") + "." + suffix
        self.push_image(repo, tag, [(data, media_type)], labels=None, uncompressed_layers=[data])
        return tag


def _split_challenge(params: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in params:
        if ch == '"':
            quoted = not quoted
            continue
        if ch == "," and not quoted:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out
