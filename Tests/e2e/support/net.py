"""Small networking helpers shared by the registry, issuer and proxy fakes."""
from __future__ import annotations

import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Callable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Polls until predicate() is true. The timeout is a hang guard for start-up, never an assertion."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {timeout}s")
        time.sleep(interval)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalHTTPService:
    """A small HTTP server on a free 127.0.0.1 port, served from a thread; subclasses give `_handler()`.
    Use as a context manager or call start()/stop()."""

    _server: _Server | None = None

    def _handler(self):
        raise NotImplementedError

    def start(self):
        self._server = _Server(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]
