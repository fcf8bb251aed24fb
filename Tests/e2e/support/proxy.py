"""A counting, fault-injecting HTTP proxy in front of a real registry, and the small servers it works with.

`FaultProxy` forwards every request to the upstream registry (keeping the client's Host, so Location and Link
headers point back at the proxy) and counts them per kind: "base" (`/v2/`), "tags", "manifests", "blobs",
"uploads", "other". Faults, each armed by a test for a kind of request, optionally only for paths containing
`match` (one image's layer digest) and after letting `skip` of them through:
- `fail`: answer a status (500, 429, 503, with headers such as `Retry-After`);
- `delay`: answer late;
- `stall`: accept the request and never answer;
- `break_body`: forward the request, answer the real head, then mangle the body after `after` bytes:
  "close" (drop the connection), "stall" (send nothing more), "drip" (one byte every 1/rate s).
Also: serve a malformed manifest body, page tags/list as hosted registries do, or redirect blob GETs to a
`RedirectTarget` reached by another host name. Everything stalled or dripping is let go when the proxy stops.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode, urlparse

from .images import OCI_MANIFEST, RegistryAPI, sha256_digest
from .net import LocalHTTPService

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
               "proxy-authenticate"}


def request_kind(path: str) -> str:
    path = urlparse(path).path
    if path.rstrip("/") == "/v2":
        return "base"
    if "/blobs/uploads" in path:
        return "uploads"
    if re.search(r"/manifests/[^/]+$", path):
        return "manifests"
    if re.search(r"/blobs/[^/]+$", path):
        return "blobs"
    if path.endswith("/tags/list"):
        return "tags"
    return "other"


@dataclass
class SeenRequest:
    method: str
    path: str
    kind: str
    headers: dict[str, str]


BODY_FAULTS = ("close", "stall", "drip")


@dataclass
class _Fault:
    kind: str
    remaining: int
    status: int = 0
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    methods: tuple[str, ...] = ("GET", "HEAD")
    match: str | None = None
    skip: int = 0
    stall: bool = False
    body: str | None = None  # one of BODY_FAULTS
    after: int = 0
    rate: float = 1.0

    def applies(self, kind: str, method: str, path: str) -> bool:
        return (self.kind == kind and self.remaining > 0 and method in self.methods
                and (self.match is None or self.match in path))


class FaultProxy(LocalHTTPService):
    def __init__(self, upstream: str):
        self.upstream = upstream  # "127.0.0.1:PORT"
        self._lock = threading.Lock()
        self.seen: list[SeenRequest] = []
        self._faults: list[_Fault] = []
        self.stall_kinds: set[str] = set()
        self.malformed_manifest: bytes | None = None
        self.tag_page_size: int | None = None
        self.redirect_blobs_to: "RedirectTarget | None" = None
        self._release = threading.Event()

    # -- arming faults -------------------------------------------------------------------------------------

    def fail(self, kind: str, status: int, times: int, headers: dict[str, str] | None = None, *,
             match: str | None = None, skip: int = 0, methods: tuple[str, ...] = ("GET", "HEAD")) -> None:
        self._arm(_Fault(kind, times, status=status, headers=dict(headers or {}), match=match, skip=skip,
                         methods=methods))

    def delay(self, kind: str, seconds: float, times: int, methods: tuple[str, ...] = ("GET", "HEAD"), *,
              match: str | None = None) -> None:
        self._arm(_Fault(kind, times, delay=seconds, methods=methods, match=match))

    def stall(self, kind: str, *, match: str | None = None, skip: int = 0, times: int = 1000) -> None:
        self._arm(_Fault(kind, times, stall=True, match=match, skip=skip))

    def break_body(self, kind: str, mode: str, *, after: int = 0, rate: float = 1.0, match: str | None = None,
                   skip: int = 0, times: int = 1000) -> None:
        assert mode in BODY_FAULTS, mode
        self._arm(_Fault(kind, times, body=mode, after=after, rate=rate, match=match, skip=skip, methods=("GET",)))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _arm(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: str, method: str, path: str = "") -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.applies(kind, method, path):
                    if f.skip > 0:
                        f.skip -= 1
                        return None
                    f.remaining -= 1
                    return f
        return None

    # -- counting ------------------------------------------------------------------------------------------

    def count(self, kind: str, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.seen if r.kind == kind and (method is None or r.method == method))

    def counts(self) -> Counter:
        with self._lock:
            return Counter(r.kind for r in self.seen)

    def reset_counts(self) -> None:
        with self._lock:
            self.seen.clear()

    # -- serving -------------------------------------------------------------------------------------------

    def _handler(proxy):  # noqa: N805
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                kind = request_kind(self.path)
                with proxy._lock:
                    proxy.seen.append(SeenRequest(self.command, self.path, kind, dict(self.headers.items())))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""

                fault = proxy._take_fault(kind, self.command, self.path)
                if kind in proxy.stall_kinds or (fault and fault.stall):
                    proxy._release.wait()  # accept, read, never answer (until the proxy stops)
                    self.close_connection = True
                    return
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.status:
                    payload = (b'{"errors":[{"code":"UNAVAILABLE","message":"injected by the test proxy"}]}'
                               if fault.status >= 500 else b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
                    self._send(fault.status, payload, {"Content-Type": "application/json", **fault.headers})
                    return
                if kind == "manifests" and self.command == "GET" and proxy.malformed_manifest is not None:
                    data = proxy.malformed_manifest
                    self._send(200, data, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(data),
                                           "Docker-Distribution-Api-Version": "registry/2.0"})
                    return
                if kind == "blobs" and self.command == "GET" and proxy.redirect_blobs_to is not None:
                    repo_digest = urlparse(self.path).path[len("/v2/"):].replace("/blobs/", "@", 1)
                    location = proxy.redirect_blobs_to.url_for(repo_digest)
                    self._send(307, b"", {"Location": location})
                    return

                path = self.path
                if kind == "tags" and self.command == "GET" and proxy.tag_page_size:
                    return self._page_tags()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
                    if self.command == "HEAD":
                        self.send_response(resp.status)
                        for k, v in out.items():
                            self.send_header(k, v)
                        if resp.getheader("Content-Length"):
                            self.send_header("Content-Length", resp.getheader("Content-Length"))
                        self.end_headers()
                    elif fault and fault.body:
                        self._send_broken(resp.status, data, out, fault)
                    else:
                        self._send(resp.status, data, out)
                finally:
                    conn.close()

            def _send_broken(self, status: int, data: bytes, headers: dict[str, str], fault: _Fault):
                """The real head (full Content-Length), `after` bytes of body, then the fault."""
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.close_connection = True
                try:
                    self.wfile.write(data[:fault.after])
                    self.wfile.flush()
                    if fault.body == "stall":
                        proxy._release.wait()
                    elif fault.body == "drip":
                        for i in range(fault.after, len(data)):
                            if proxy._release.wait(1 / fault.rate):
                                return
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                except OSError:
                    pass  # the client gave up

            def _page_tags(self):
                """distribution 2.8 ignores `n`/`last` on tags/list (v3 and hosted registries honour them): page
                the full list here, at most tag_page_size per page, with RFC 5988 `Link: <...>; rel="next"`."""
                url = urlparse(self.path)
                query = parse_qs(url.query)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    conn.request("GET", url.path, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if resp.status != 200:
                    self._send(resp.status, data, {k: v for k, v in resp.getheaders()
                                                   if k.lower() not in _HOP_BY_HOP | {"content-length"}})
                    return
                doc = json.loads(data)
                tags = sorted(doc.get("tags") or [])
                n = min(int(query.get("n", [proxy.tag_page_size])[0]), proxy.tag_page_size)
                last = query.get("last", [None])[0]
                if last is not None:
                    tags = [t for t in tags if t > last]
                page, more = tags[:n], len(tags) > n
                out = {"Content-Type": "application/json"}
                if more:
                    out["Link"] = f'<{url.path}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'
                self._send(200, json.dumps({"name": doc.get("name"), "tags": page}).encode(), out)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
        return Handler

    def stop(self) -> None:
        self._release.set()  # stalled requests give up first, so shutdown does not wait for them
        super().stop()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


class RedirectTarget(LocalHTTPService):
    """Where the proxy redirects blob GETs: object storage in miniature, addressed as `localhost` (another host
    name than the registry's `127.0.0.1`). Records every request's Authorization header (None when absent) and
    serves the blob, fetched from the real registry with the harness's own credentials."""

    def __init__(self, upstream: str, *, creds: str | None = None):
        self.api = RegistryAPI(upstream, creds=creds)
        self._lock = threading.Lock()
        self.seen: list[dict] = []

    def url_for(self, repo_digest: str) -> str:
        return f"http://localhost:{self.port}/storage/{repo_digest}?X-Signature=test"

    def _handler(target):  # noqa: N805
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with target._lock:
                    target.seen.append({"path": self.path, "host": self.headers.get("Host"),
                                        "authorization": self.headers.get("Authorization"),
                                        "range": self.headers.get("Range")})
                repo, _, digest = urlparse(self.path).path[len("/storage/"):].partition("@")
                data = target.api.get_blob(repo, digest)
                status, headers = 200, {"Content-Type": "application/octet-stream"}
                rng = self.headers.get("Range")
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
                if m:
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else len(data) - 1
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    data, status = data[start:end + 1], 206
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        return Handler



class StallServer:
    """Accepts TCP connections and never answers: a registry that hangs."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._conns: list[socket.socket] = []
        self._stopped = threading.Event()
        self.accepted = 0

    def start(self) -> "StallServer":
        self._sock.listen(16)
        self._sock.settimeout(0.2)

        def loop():
            while not self._stopped.is_set():
                try:
                    conn, _ = self._sock.accept()
                except (socket.timeout, OSError):
                    continue
                self._conns.append(conn)
                self.accepted += 1
        threading.Thread(target=loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        for c in self._conns:
            c.close()
        self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._sock.getsockname()[1]}"
