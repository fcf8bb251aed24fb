"""Reading a daemon's Prometheus endpoint."""
from __future__ import annotations

import urllib.request


def metric(port: int, name: str) -> float:
    """The value of the unlabelled series `name` on the endpoint at 127.0.0.1:`port`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics:\n{text}")
