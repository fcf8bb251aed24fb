"""A registry 20 ms away, on loopback: a streaming HTTP proxy that adds a round trip's delay to each request (and
to each new connection, for its TCP handshake), optionally caps the bandwidth of everything it sends back, and logs
every exchange with its times.

There is no `netem` qdisc on these machines (DOMAIN.md §6), so latency is emulated in user space. The model is a
link with one-way latency `delay / 2` each way: a request reaches the registry half a round trip after it was sent
and its answer starts back half a round trip later, so one request costs `delay` before its first byte, however
many run at once (requests in parallel overlap their round trips, as on a real link). The bandwidth cap, when set,
is one token bucket shared by all connections, the way one link is shared: concurrent transfers split it.

The log (`exchanges`) is what tests use to count requests and to order them: each `Exchange` has the time the
request arrived, when its first byte went back and when its last byte did, and the byte range asked for.
"""
from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from .net import LocalHTTPService
from .proxy import request_kind

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
               "proxy-authenticate"}
_CHUNK = 64 << 10


@dataclass
class Exchange:
    method: str
    path: str
    kind: str
    range: tuple[int, int] | None  # inclusive byte range asked for, None for a whole body or several ranges
    arrived: float  # time.monotonic() when the request reached the proxy
    first_byte: float | None = None
    done: float | None = None
    status: int | None = None
    body_bytes: int = 0
    ranges: list[tuple[int, int]] | None = None  # every inclusive range asked for (a multi-range request has several)

    def overlaps(self, other: "Exchange") -> bool:
        """True when the two were in flight at the same moment (arrival to last byte)."""
        return self.arrived < (other.done or float("inf")) and other.arrived < (self.done or float("inf"))


class _Link:
    """One shared bottleneck: `rate` bytes per second for everything sent back, in arrival order of the chunks."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0

    def pace(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + n / self.rate
            until = self._free_at
        time.sleep(max(0.0, until - time.monotonic()))


class LatencyProxy(LocalHTTPService):
    """Forwards to `upstream` ("127.0.0.1:PORT") keeping the client's Host header (so Location headers point back
    here). `delay` seconds per request (default 20 ms) and per new connection; `bandwidth` bytes per second for
    responses, None for unlimited."""

    def __init__(self, upstream: str, *, delay: float = 0.020, connect_delay: float | None = None,
                 bandwidth: float | None = None):
        self.upstream = upstream
        self.delay = delay
        self.connect_delay = delay if connect_delay is None else connect_delay
        self.link = _Link(bandwidth)
        self._lock = threading.Lock()
        self.exchanges: list[Exchange] = []
        self.connections = 0

    # -- the log ----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.exchanges.clear()
            self.connections = 0

    def log(self, kind: str | None = None) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if kind is None or e.kind == kind]

    def blob_requests(self, digest: str | None = None) -> list[Exchange]:
        return [e for e in self.log("blobs") if e.method == "GET" and (digest is None or e.path.endswith(digest))]

    def bytes_sent(self, kind: str = "blobs") -> int:
        return sum(e.body_bytes for e in self.log(kind))

    # -- serving ----------------------------------------------------------------------------------------------

    def _handler(proxy):  # noqa: N805
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPConnection | None = None

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with proxy._lock:
                    proxy.connections += 1
                time.sleep(proxy.connect_delay)  # the handshake's round trip, before any request on it

            def finish(self):
                if self.upstream_conn is not None:
                    self.upstream_conn.close()
                super().finish()

            def _forward(self):
                ranges = _parse_ranges(self.headers.get("Range"))
                exchange = Exchange(self.command, self.path, request_kind(self.path),
                                    ranges[0] if ranges and len(ranges) == 1 else None, time.monotonic(),
                                    ranges=ranges)
                with proxy._lock:
                    proxy.exchanges.append(exchange)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                # Half a round trip to reach the registry, half for the answer to start back: one `delay` in all.
                time.sleep(proxy.delay)
                if self.upstream_conn is None:
                    self.upstream_conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                try:
                    # Header by header: clients repeat some (skopeo sends one Accept per media type).
                    conn = self.upstream_conn
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP_BY_HOP | {"content-length"}:
                            conn.putheader(k, v)
                    if body is not None:
                        conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    self.upstream_conn.close()
                    self.upstream_conn = None
                    raise
                exchange.status = resp.status
                self.send_response(resp.status)
                declared = resp.getheader("Content-Length")
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(k, v)
                data = b"" if declared is not None or self.command == "HEAD" else resp.read()
                self.send_header("Content-Length", declared if declared is not None else str(len(data)))
                self.end_headers()
                exchange.first_byte = time.monotonic()
                if self.command != "HEAD":
                    if data:
                        self._send_paced(data, exchange)
                    while chunk := resp.read(_CHUNK):
                        self._send_paced(chunk, exchange)
                resp.close()
                self.wfile.flush()
                exchange.done = time.monotonic()

            def _send_paced(self, data: bytes, exchange: Exchange) -> None:
                for i in range(0, len(data), _CHUNK):
                    part = data[i:i + _CHUNK]
                    proxy.link.pace(len(part))
                    self.wfile.write(part)
                    exchange.body_bytes += len(part)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward
        return Handler

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def _parse_ranges(value: str | None) -> list[tuple[int, int]] | None:
    """`bytes=A-B[,C-D...]` → [(A, B), (C, D), ...]; None without a Range header (or one of another form)."""
    m = re.fullmatch(r"bytes=(\d+-\d+(?:, ?\d+-\d+)*)", value or "")
    if not m:
        return None
    return [(int(a), int(b)) for a, b in (part.strip().split("-") for part in m.group(1).split(","))]
