"""The manifests in deploy/kubernetes/, run under podman as a kubelet would run them on one node: each container
of a pod spec becomes a `podman run` with its command and args ($(VAR) expanded from its env and envFrom
ConfigMap), its env, `--privileged` from its securityContext, and each hostPath volume bind-mounted from a
directory standing for the node's root, with `mountPropagation` as bind propagation (Bidirectional is rshared,
HostToContainer rslave). What a test machine cannot give is substituted, and listed by `substitutions`: the
image, the registry (plain HTTP on 127.0.0.1, so host networking), the GPU, the metrics port, and the workload's
command."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = REPO_ROOT / "deploy" / "kubernetes"
PROPAGATION = {"Bidirectional": "rshared", "HostToContainer": "rslave", "None": "private", None: "private"}


def documents() -> list[dict]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict:
    return next(d for d in documents() if d["kind"] == kind)


@dataclass
class Node:
    """A directory standing for a node's root. Its own bind mount is made rshared, as systemd makes a node's /
    at boot (a container's Bidirectional mount reaches the host only through a shared mount)."""
    root: Path
    mounted: bool = False

    def __post_init__(self):
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(self.root), str(self.root)], check=True, capture_output=True)
        self.mounted = True
        subprocess.run(["mount", "--make-rshared", str(self.root)], check=True, capture_output=True)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def mounts_below(self, host_path: str) -> list[tuple[int, str]]:
        """(mount ID, fstype) of the mounts at `host_path` on this node, as the host sees them."""
        target = str(self.path(host_path))
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" ")
            dash = fields.index("-")
            if fields[4] == target:
                found.append((int(fields[0]), fields[dash + 1]))
        return found

    def close(self) -> None:
        """Lazily detaches everything under the node (stale FUSE mounts of killed containers included)."""
        if self.mounted:
            subprocess.run(["umount", "-R", "-l", str(self.root)], capture_output=True)
            self.mounted = False


@dataclass
class PodmanRun:
    argv: list[str]
    substitutions: list[str] = field(default_factory=list)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def container_run(pod: dict, container: str, node: Node, *, name: str, image: str,
                  config: dict[str, str] | None = None, command: list[str] | None = None,
                  extra_args: list[str] = (), replace_args: dict[str, str] | None = None,
                  extra_volumes: list[str] = ()) -> PodmanRun:
    """`podman run -d` for container `container` of pod spec `pod`. `config` overrides ConfigMap keys;
    `command` replaces the container's command and args; `extra_args` are inserted after the mount command's
    first words (`--plain-http` for the test registry); `replace_args` swaps whole words (a metrics port two pods
    on the host network would share)."""
    spec = next(c for c in pod["containers"] if c["name"] == container)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    env: dict[str, str] = {}
    substitutions = [f"image {image}", "host network (the test registry is on 127.0.0.1)"]
    for source in spec.get("envFrom", []):
        configmap = next(d for d in documents()
                         if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMapRef"]["name"])
        env.update(configmap["data"])
    for key, value in (config or {}).items():
        substitutions.append(f"{key}={value}")
        env[key] = value
    for entry in spec.get("env", []):
        if "value" not in entry:  # valueFrom: a Secret the rehearsal does not have (an optional one)
            substitutions.append(f"env {entry['name']} left out (valueFrom)")
            continue
        env[entry["name"]] = expand(entry["value"], env)
    argv = ["podman", "run", "-d", "--name", name, "--network", "host"]
    if spec.get("securityContext", {}).get("privileged"):
        argv.append("--privileged")
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    for mount in spec.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        host = volume.get("hostPath")
        if host is None:
            substitutions.append(f"volume {mount['name']} left out (not a hostPath)")
            continue
        if host.get("type") == "CharDevice":
            argv += ["--device", host["path"]]
            continue
        source = node.path(host["path"])
        if host.get("type") == "DirectoryOrCreate":
            source.mkdir(parents=True, exist_ok=True)
        argv += ["-v", f"{source}:{mount['mountPath']}:{PROPAGATION[mount.get('mountPropagation')]}"]
    argv += list(extra_volumes)
    argv.append(image)
    if command is not None:
        substitutions.append(f"command {' '.join(command)}")
        argv += command
    else:
        words = [expand(w, env) for w in spec.get("command", []) + spec.get("args", [])]
        for old, new in (replace_args or {}).items():
            assert old in words, (old, words)
            substitutions.append(f"{old} -> {new}")
            words = [new if w == old else w for w in words]
        if extra_args:
            substitutions += [f"added {a}" for a in extra_args]
            words = words[:3] + list(extra_args) + words[3:]
        argv += words
    return PodmanRun(argv, substitutions)
