"""The metrics endpoint against hostile network clients (issue 21, break 8). The shipped DaemonSet listens on
0.0.0.0:9400, so anyone who reaches the node can connect: a client that sends its request a byte at a time, or
connects and says nothing, or holds many connections, or sends an endless header, must never delay a scrape nor
hold a connection past its deadline. Real mount, real daemon, real sockets.

The endpoint's bounds (Sources/MetricsEndpoint, `MetricsServer.Limits`): 64 connections, 1 s without a byte,
2 s from accept to close, 16 KiB of request. A scrape beside hostile clients must take under a second; it is
held to SCRAPE_BOUND, twice that for a loaded machine, and the figure is printed. Drops are held to their
deadline plus SLACK. Other timeouts are hang guards."""
from __future__ import annotations

import os
import selectors
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from support.mounts import Mounted, is_mountpoint, wait_gone
from test_service import parse_prometheus

LIMIT = 64  # MetricsServer.Limits.maxConnections
IDLE = 1.0  # MetricsServer.Limits.idleTimeout
DEADLINE = 2.0  # MetricsServer.Limits.requestDeadline
SCRAPE_BOUND = 2.0  # the issue demands under 1 s; twice that for a machine shared by many test runs
SLACK = 3.0
GUARD = 30  # a hang guard only
CLOSED = 'mcvfs_metrics_connections_closed_total{{reason="{}"}}'


def mount_with_metrics(anon, mounts, tmp_path: Path) -> tuple[str, int]:
    return metrics_address(mount(anon, mounts, tmp_path))


def mount(anon, mounts, tmp_path: Path) -> Mounted:
    return mounts.mount(f"{anon.host}/org/cache:cuda-sm90", tmp_path / "mnt", tmp_path / "cache",
                        "--gpu", "cuda:90", "--metrics-listen", "127.0.0.1:0")


def metrics_address(mnt: Mounted) -> tuple[str, int]:
    host, port = mnt.status()["service"]["metricsListen"].rsplit(":", 1)
    return host, int(port)


def connect(address: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(address, timeout=GUARD)
    s.setblocking(False)
    return s


def timed_scrape(address: tuple[str, int], what: str) -> tuple[dict[str, float], float]:
    start = time.monotonic()
    try:
        response = requests.get(f"http://{address[0]}:{address[1]}/metrics", timeout=GUARD)
    except requests.RequestException as error:
        raise AssertionError(f"the scrape {what} failed after {time.monotonic() - start:.1f} s: {error}") from None
    seconds = time.monotonic() - start
    print(f"scrape {what}: {seconds:.3f} s")
    assert response.status_code == 200, response
    assert seconds < SCRAPE_BOUND, f"the scrape {what} took {seconds:.2f} s"
    return parse_prometheus(response.text), seconds


def drop_times(sockets: dict[socket.socket, float], guard: float) -> dict[socket.socket, float]:
    """Seconds from each socket's connect (the dict's value, time.monotonic()) until the server closed it."""
    dropped: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for s in sockets:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + guard
        while len(dropped) < len(sockets) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                except BlockingIOError:
                    continue
                assert data == b"", f"the server answered a client that never completed a request: {data!r}"
                dropped[s] = time.monotonic() - sockets[s]
                sel.unregister(s)
    return dropped


class Dripper(threading.Thread):
    """Sends the start of a request a byte at a time, every `interval` seconds, until the server closes it."""

    def __init__(self, address: tuple[str, int], interval: float):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(address, timeout=GUARD)
        self.connected = time.monotonic()
        self.interval = interval
        self.stop = threading.Event()

    def run(self) -> None:
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"y" * 1000:
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return
            if self.stop.wait(self.interval):
                return


def test_a_slow_client_and_idle_connections_never_delay_a_scrape(anon, mounts, tmp_path):
    address = mount_with_metrics(anon, mounts, tmp_path)
    slow = Dripper(address, interval=2.0)  # the attacker: never idle for long, never done
    steady = Dripper(address, interval=0.3)  # never idle at all: only the deadline ends it
    for dripper in (slow, steady):
        dripper.start()
    idle = {connect(address): time.monotonic() for _ in range(6)}
    try:
        time.sleep(0.2)  # every hostile connection is accepted and waiting before the scrape
        _, seconds = timed_scrape(address, "beside a slow client, a steady drip and 6 idle connections")

        dropped = drop_times({**idle, slow.sock: slow.connected, steady.sock: steady.connected}, guard=GUARD)
        print(f"idle connections dropped after {sorted(round(dropped.get(s, -1), 2) for s in idle)} s; "
              f"the slow client after {dropped.get(slow.sock, -1):.2f} s, the steady one after "
              f"{dropped.get(steady.sock, -1):.2f} s")
        assert set(dropped) == {*idle, slow.sock, steady.sock}, "a hostile connection outlived its deadline"
        for s in idle:
            assert dropped[s] < IDLE + SLACK
        assert dropped[slow.sock] < IDLE + SLACK, "a byte every 2 s is idle for longer than the idle timeout"
        assert DEADLINE - 0.5 < dropped[steady.sock] < DEADLINE + SLACK, "a steady drip is cut at the deadline"
        metrics, _ = timed_scrape(address, "after the drops")
        assert metrics[CLOSED.format("idle")] >= 7
        assert metrics[CLOSED.format("deadline")] >= 1
    finally:
        for dripper in (slow, steady):
            dripper.stop.set()
            dripper.sock.close()
        for s in idle:
            s.close()


def test_the_connection_limit_closes_excess_connections_and_a_scrape_still_gets_through(anon, mounts, tmp_path):
    address = mount_with_metrics(anon, mounts, tmp_path)
    holders = {connect(address): time.monotonic() for _ in range(LIMIT + 6)}
    try:
        time.sleep(0.2)
        metrics, _ = timed_scrape(address, f"beside {LIMIT + 6} idle connections")
        held, displaced = metrics["mcvfs_metrics_connections"], metrics[CLOSED.format("limit")]
        print(f"at the scrape: {held:.0f} connections open, {displaced:.0f} closed at the limit")
        # The scrape itself is one of the connections: the endpoint never holds more than the limit.
        assert held <= LIMIT
        # At the limit, a newcomer displaced the oldest connection still waiting for its request.
        assert displaced >= 1
        dropped = drop_times(holders, guard=GUARD)
        assert set(dropped) == set(holders), "an idle connection outlived its deadline"
        early = sorted(dropped.values())[:6]
        print(f"the first six holders were dropped after {[round(t, 3) for t in early]} s")
    finally:
        for s in holders:
            s.close()


def test_an_endless_request_is_cut_at_its_size_bound_and_sigterm_still_stops_the_daemon(anon, mounts, tmp_path):
    mnt = mount(anon, mounts, tmp_path)
    address = metrics_address(mnt)
    answer = b""
    with socket.create_connection(address, timeout=GUARD) as s:
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            for _ in range(1024):  # 1 MiB of headers, as fast as the server takes them
                s.sendall(b"X-Pad: " + b"y" * 1015 + b"\r\n")
            while chunk := s.recv(65536):
                answer += chunk
        except OSError:
            pass  # reset by the server, which closed with our bytes unread: what this test wants
    assert answer == b"", f"the endpoint answered an oversized request: {answer[:200]!r}"
    metrics, _ = timed_scrape(address, "after an oversized request")
    assert metrics[CLOSED.format("oversize")] == 1

    # The endpoint's thread leaves SIGTERM to the FUSE loop: the daemon unmounts, exits and frees the port.
    pid = mnt.pid
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    assert not is_mountpoint(mnt.path), mnt.daemon_log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=GUARD)
