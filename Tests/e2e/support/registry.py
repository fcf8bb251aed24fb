"""A real CNCF distribution registry (`docker-registry serve`) on an ephemeral 127.0.0.1 port.

Three variants: anonymous, htpasswd Basic auth, and Bearer token auth backed by `TokenIssuer`
(a small ES256 JWT issuer, see `token_issuer.py`). The registry logs at info level to a file, one
"response completed" line per request, so tests can count what a client really asked for.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from .net import free_port, wait_until
from .tls import ServerCert
from .token_issuer import TokenIssuer


def require_tool(name: str) -> str:
    """A missing tool is a failure, never a skip: scripts/setup installs it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"required tool {name!r} is not installed (run scripts/setup)")
    return path


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    uri: str
    status: int


_LOG_FIELD = re.compile(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)')


class Registry:
    """`docker-registry serve` with a temp storage dir. Use as a context manager or call start()/stop()."""

    def __init__(self, workdir: Path, *, basic_users: dict[str, str] | None = None,
                 token_issuer: TokenIssuer | None = None, service: str = "mcvfs-test-registry",
                 tls: ServerCert | None = None):
        if basic_users and token_issuer:
            raise ValueError("a registry has one auth scheme")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.basic_users = dict(basic_users or {})
        self.token_issuer = token_issuer
        self.tls = tls
        self.service = service
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _config(self, port: int) -> dict:
        config: dict = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"127.0.0.1:{port}", "secret": "mcvfs-test-secret"},
        }
        if self.tls:
            config["http"]["tls"] = {"certificate": str(self.tls.cert_path), "key": str(self.tls.key_path)}
        if self.basic_users:
            htpasswd = self.workdir / "htpasswd"
            tool = require_tool("htpasswd")
            lines = []
            for user, password in self.basic_users.items():
                out = subprocess.run([tool, "-Bbn", user, password], check=True, capture_output=True, text=True)
                lines.append(out.stdout.strip())
            htpasswd.write_text("\n".join(lines) + "\n")
            config["auth"] = {"htpasswd": {"realm": "mcvfs-test", "path": str(htpasswd)}}
        if self.token_issuer:
            config["auth"] = {"token": {
                "realm": self.token_issuer.realm,
                "service": self.service,
                "issuer": self.token_issuer.issuer,
                "rootcertbundle": str(self.token_issuer.cert_path),
            }}
        return config

    def start(self) -> "Registry":
        binary = require_tool("docker-registry")
        last_error = ""
        for _ in range(5):  # a free port can be taken between probing and binding; try another
            port = free_port()
            self.config_path.write_text(yaml.safe_dump(self._config(port)))
            log = open(self.log_path, "ab")
            self._proc = subprocess.Popen([binary, "serve", str(self.config_path)], stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL)
            log.close()
            self.port = port

            def answers() -> bool:
                if self._proc.poll() is not None:
                    raise RuntimeError("exited")
                try:
                    requests.get(f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v2/", timeout=2,
                                 verify=str(self.tls.ca_path) if self.tls else True)
                    return True
                except requests.ConnectionError:
                    return False
            try:
                wait_until(answers, timeout=30, what=f"registry on port {port}")
                return self
            except RuntimeError:
                last_error = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
        raise RuntimeError(f"docker-registry did not start:\n{last_error}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests use ------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def blob_path(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes (to corrupt them in place)."""
        algorithm, hex_ = digest.split(":", 1)
        return self.storage_dir / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def requests_seen(self) -> list[LoggedRequest]:
        """Every request the registry answered, in order: "response completed" lines, and the "error
        authorizing context" warnings it logs instead when it answers 401."""
        seen = []
        for line in self.log_lines():
            fields = {k: v.strip('"') for k, v in _LOG_FIELD.findall(line)}
            if "http.request.uri" not in fields:
                continue
            if "http.response.status" in fields:
                status = int(fields["http.response.status"])
            elif fields.get("msg", "").startswith("error authorizing context"):
                status = 401
            else:
                continue
            seen.append(LoggedRequest(method=fields.get("http.request.method", ""), uri=fields["http.request.uri"],
                                      status=status))
        return seen

    def mark(self) -> int:
        """A position in the request log; pass it to requests_since() to see only later requests."""
        return len(self.requests_seen())

    def requests_since(self, mark: int) -> list[LoggedRequest]:
        return self.requests_seen()[mark:]
