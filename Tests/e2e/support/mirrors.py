"""A pull-through cache: CNCF distribution (the same `docker-registry` package as the test registries) in proxy
mode, in front of an origin registry. It serves what it has, and fetches from the origin, keeps and serves what
it has not, manifests and blobs alike: the fleet recipe where nodes read through a cache near them (a cluster's,
a zone's) instead of all reading the origin."""
from __future__ import annotations

from pathlib import Path

from .registry import Registry


class PullThroughCache(Registry):
    def __init__(self, workdir: Path, origin: Registry):
        super().__init__(workdir)
        self.origin = origin

    def _config(self, port: int) -> dict:
        config = super()._config(port)
        config["proxy"] = {"remoteurl": self.origin.url}
        return config
