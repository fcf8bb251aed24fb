"""mcvfs in containers (issue 17), with Debian's buildah and podman:

- the DaemonSet's image made by scripts/build-image (pushed with the credentials mcvfs reads, and written as
  an OCI layout) and by deploy/kubernetes/Containerfile (its Docker Hub bases stood in for by images made here
  from Debian's archive), each running `mcvfs --version` and `mcvfs gpus`;
- deploy/kubernetes/daemonset.yaml and pod-example.yaml run as a kubelet would (support/kubernetes.py): the
  privileged mcvfs container mounts below an rshared hostPath, a consumer with real Triton sees it rslave at
  another path and gets a hit for every kernel;
- a killed daemon container restarted under a running consumer, and a rolling update, measured by a probe in
  the consumer that looks a kernel up every 5 ms.

Images built once are kept in .build/containers and reused by later runs. Timeouts are hang guards; the one
time bound (on how long lookups fail after a kill) is generous and bounds fault handling, not speed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support.containers import BUILD_GUARD, REPO_ROOT, Containers, venv_root
from support.kubernetes import Node, container_run, of_kind
from support.mcvfs import mcvfs_bin
from support.registry import Registry

FIXTURE = REPO_ROOT / "Tests" / "Fixtures" / "triton-3.9.0" / "cuda-90"
KEY = "3PTOANQEQTSA6SMXSRQSEKSNTIQYFJIP37QGU5JTYHLWOCHFGMCQ"
USER, PASSWORD = "builder", "s3cret-image"
GUARD = 120


@pytest.fixture(scope="module")
def containers() -> Containers:
    return Containers()


@pytest.fixture(scope="module")
def image_registry(tmp_path_factory):
    with Registry(tmp_path_factory.mktemp("image-registry"), basic_users={USER: PASSWORD}) as registry:
        yield registry


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory, image_registry) -> Path:
    """A containers-auth.json, the format REGISTRY_AUTH_FILE names for mcvfs and for buildah alike."""
    import base64
    path = tmp_path_factory.mktemp("auth") / "auth.json"
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    path.write_text(json.dumps({"auths": {image_registry.host: {"auth": token}}}))
    return path


@pytest.fixture(scope="module")
def built(containers, image_registry, auth_file, tmp_path_factory) -> dict:
    """scripts/build-image as a user runs it: release build, the cached base, push and an OCI layout."""
    layout = tmp_path_factory.mktemp("image-layout") / "layout"
    ref = f"{image_registry.host}/org/mcvfs:e2e"
    env = {**containers.env, "REGISTRY_AUTH_FILE": str(auth_file), "PATH": f"/opt/swift/usr/bin:{os.environ['PATH']}"}
    started = time.monotonic()
    out = subprocess.run([str(REPO_ROOT / "scripts" / "build-image"), "--tag", ref, "--push", "--plain-http",
                          "--output", f"oci-layout:{layout}"], capture_output=True, text=True, env=env,
                         timeout=BUILD_GUARD, cwd=REPO_ROOT)
    assert out.returncode == 0, f"build-image failed:\n{out.stdout}\n{out.stderr[-6000:]}"
    image_id, pushed = out.stdout.strip().splitlines()[-2:]
    digest, name = pushed.split("\t")
    assert name == ref and digest.startswith("sha256:"), pushed
    return {"ref": ref, "id": image_id, "digest": digest, "layout": layout, "seconds": time.monotonic() - started,
            "log": out.stderr}


# -- the image, both ways -----------------------------------------------------------------------------------

def assert_binary_runs(containers: Containers, image: str) -> None:
    version = containers.podman("run", "--rm", image, "mcvfs", "--version").stdout.strip()
    assert version == subprocess.run([mcvfs_bin(), "--version"], capture_output=True, text=True).stdout.strip()
    gpus = containers.podman("run", "--rm", "-e", "MCVFS_GPU=cuda:90", image, "mcvfs", "gpus").stdout.split()
    assert gpus == ["cuda:90"], gpus
    # What a node needs besides the binary: fusermount3 (setuid, for unmounting) and the CA bundle.
    tools = containers.podman("run", "--rm", image, "sh", "-c",
                              "test -u /usr/bin/fusermount3 && test -s /etc/ssl/certs/ca-certificates.crt "
                              "&& dpkg-query -W -f '${Package}\\n' libsodium23 fuse3 ca-certificates")
    assert sorted(tools.stdout.split()) == ["ca-certificates", "fuse3", "libsodium23"], tools.stdout


def test_build_image_makes_a_two_layer_image_whose_binary_runs(containers, built):
    assert_binary_runs(containers, built["ref"])
    (config,) = [containers.image_config(built["ref"])]
    layers = config["OCIv1"]["rootfs"]["diff_ids"]
    assert len(layers) == 2, "a Debian base and the binary, so an upgrade ships one layer"
    labels = config["OCIv1"]["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    base = labels["org.opencontainers.image.base.name"]
    assert containers.image_config(base)["OCIv1"]["rootfs"]["diff_ids"] == layers[:1]
    # The base holds the packages of every library the binary loads, libsodium among them.
    packages = containers.image_config(base)["OCIv1"]["config"]["Labels"]["io.mcvfs.base.packages"].split()
    assert {"libsodium23", "libfuse3-3", "libcurl4", "libarchive13", "libssl3", "fuse3"} <= set(packages)


def test_build_image_pushes_with_the_credentials_mcvfs_reads(built, auth_file, mcvfs, image_registry):
    # The pushed manifest, read back by mcvfs through the same REGISTRY_AUTH_FILE.
    out = mcvfs.run("inspect", "--plain-http", "--json", built["ref"], env={"REGISTRY_AUTH_FILE": str(auth_file)})
    assert out.json()["digest"] == built["digest"], out
    assert mcvfs.run("inspect", "--plain-http", "--json", built["ref"]).rc == 1, "the registry wants credentials"
    # The OCI layout holds the same image.
    layout = subprocess.run(["skopeo", "inspect", f"oci:{built['layout']}:e2e"], capture_output=True, text=True,
                            timeout=GUARD)
    assert layout.returncode == 0, layout.stderr
    assert json.loads(layout.stdout)["Labels"]["org.opencontainers.image.title"] == "mcvfs"


def test_containerfile_builds_an_image_whose_binary_runs(containers):
    """deploy/kubernetes/Containerfile, unchanged, with its two Docker Hub bases passed as build arguments:
    stand-ins made here from Debian's archive (bookworm-slim's minbase, and Swift's bookworm image's packages
    with this machine's toolchain)."""
    builder, base = containers.swift_builder(), containers.debian_slim()
    tag = "localhost/mcvfs-containerfile:e2e"
    containers.buildah("bud", "--network", "host", "--build-arg", f"SWIFT_IMAGE={builder}", "--build-arg",
                       f"BASE_IMAGE={base}", "-f", "deploy/kubernetes/Containerfile", "-t", tag, str(REPO_ROOT),
                       timeout=BUILD_GUARD)
    assert_binary_runs(containers, tag)


# -- the DaemonSet under podman -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache_registry(tmp_path_factory):
    """The bundled real Triton cache (cuda:90), pushed and signed by mcvfs itself: the DaemonSet verifies with the
    mcvfs-trust ConfigMap's key, which the rehearsal mounts where the ConfigMap would be (`trust`)."""
    trust = tmp_path_factory.mktemp("trust")
    env = {**os.environ, "COSIGN_PASSWORD": "pw"}
    out = subprocess.run([mcvfs_bin(), "generate-key-pair"], capture_output=True, text=True, timeout=GUARD, env=env,
                         cwd=trust)
    assert out.returncode == 0, out.stderr
    (trust / "cosign.key").rename(trust.parent / f"{trust.name}.key")  # only the public key goes to the node
    with Registry(tmp_path_factory.mktemp("cache-registry")) as registry:
        out = subprocess.run([mcvfs_bin(), "push", "--plain-http", "--sign-key", str(trust.parent / f"{trust.name}.key"),
                              str(FIXTURE), f"{registry.host}/org/cache:cuda-sm90"], capture_output=True, text=True,
                             timeout=GUARD, env=env)
        assert out.returncode == 0, out.stderr
        registry.trust = trust
        yield registry


class Cluster:
    """One node of the cluster: daemon pods from daemonset.yaml, workload pods from pod-example.yaml."""

    def __init__(self, containers: Containers, image: str, registry: Registry, root: Path):
        self.containers = containers
        self.image = image
        self.registry = registry
        self.node = Node(root / "node")
        self.probes = root / "probes"
        self.probes.mkdir()
        self.names: list[str] = []
        daemonset = of_kind("DaemonSet")
        self.daemon_spec = daemonset["spec"]["template"]["spec"]
        (self.daemon,) = self.daemon_spec["containers"]
        self.mountpoint = self.daemon["args"][-1]
        self.ready_file = next(a.split("=", 1)[1] for a in self.daemon["args"] if a.startswith("--ready-file="))
        self.workload = of_kind("Pod")

    def start_daemon(self, name: str) -> str:
        run = container_run(self.daemon_spec, "mcvfs", self.node, name=name, image=self.image,
                            config={"MCVFS_REFERENCE": f"{self.registry.host}/org/cache", "MCVFS_GPU": "cuda:90"},
                            extra_args=["--plain-http"],
                            replace_args={"--metrics-listen=0.0.0.0:9400": "--metrics-listen=127.0.0.1:0"},
                            extra_volumes=["-v", f"{self.registry.trust}:/etc/mcvfs/trust:ro"])
        self.names.append(name)
        self.containers.run(run.argv, timeout=GUARD)
        self.wait_ready(name)
        return name

    def wait_ready(self, name: str) -> None:
        """The DaemonSet's readiness probe, run in the container as the kubelet runs it."""
        probe = self.daemon["readinessProbe"]["exec"]["command"]
        deadline = time.monotonic() + GUARD
        while self.containers.podman("exec", name, *probe, check=False).returncode != 0:
            state = self.containers.podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", f"{name} is {state}:\n{self.logs(name)}"
            assert time.monotonic() < deadline, f"{name} never became ready:\n{self.logs(name)}"
            time.sleep(0.2)

    def logs(self, name: str) -> str:
        return self.containers.podman("logs", name, check=False).stdout + \
            self.containers.podman("logs", name, check=False).stderr

    def start_workload(self, name: str) -> str:
        venv = venv_root()
        run = container_run(self.workload["spec"], "app", self.node, name=name,
                            image=self.containers.python_consumer(), command=["sleep", "infinity"],
                            extra_volumes=["-v", f"{venv}:{venv}:ro", "-v", f"{REPO_ROOT / 'scripts'}:/mcvfs-scripts:ro",
                                           "-v", f"{REPO_ROOT / 'Tests/e2e/support'}:/mcvfs-support:ro",
                                           "-v", f"{self.probes}:/probes"])
        self.names.append(name)
        self.containers.run(run.argv, timeout=GUARD)
        return name

    def triton(self, workload: str) -> dict:
        """scripts/make-triton-cache.py in the workload, with the pod's TRITON_CACHE_DIR."""
        out = self.containers.podman(
            "exec", "-e", "HOME=/tmp", workload, str(venv_root() / "bin" / "python"),
            "/mcvfs-scripts/make-triton-cache.py", "--target", "cuda:90:32", "--kernels", "add,softmax,matmul",
            "--matmul-configs", "4", timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start_probe(self, workload: str, name: str) -> Path:
        env = {e["name"]: e["value"] for e in self.workload["spec"]["containers"][0]["env"]}
        root = env["TRITON_CACHE_DIR"]
        group = next(p.name for p in (FIXTURE / KEY).iterdir() if p.name.startswith("__grp__"))
        log = self.probes / f"{name}.log"
        self.containers.podman("exec", "-d", workload, "python3", "/mcvfs-support/probe.py", root, KEY, group,
                               f"/probes/{name}.log")
        deadline = time.monotonic() + GUARD
        while '"outcome"' not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the probe never started"
            time.sleep(0.05)
        return log

    def probe_events(self, log: Path) -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    def stop_probe(self, workload: str, log: Path) -> dict:
        pid = (log.parent / (log.name + ".pid")).read_text()
        self.containers.podman("exec", workload, "sh", "-c", f"kill -TERM {pid}")
        deadline = time.monotonic() + GUARD
        while not any("summary" in e for e in self.probe_events(log)):
            assert time.monotonic() < deadline, "the probe did not stop"
            time.sleep(0.05)
        return next(e["summary"] for e in self.probe_events(log) if "summary" in e)

    def top_mount(self) -> list[tuple[int, str]]:
        return self.node.mounts_below("/var/lib/mcvfs/mnt/triton")

    def close(self) -> None:
        for name in reversed(self.names):
            self.containers.remove_container(name)
        self.node.close()


@pytest.fixture
def cluster(containers, built, cache_registry, tmp_path):
    c = Cluster(containers, built["ref"], cache_registry, tmp_path)
    yield c
    c.close()


def test_daemonset_rehearsal_serves_triton_hits_through_propagation(cluster):
    cluster.start_workload("app")  # started first: it must see the mount made after it
    cluster.start_daemon("mcvfs")
    # The mount made inside the privileged container is on the host (Bidirectional)...
    assert [fstype for _, fstype in cluster.top_mount()] == ["fuse.mcvfs"]
    # ...and in the workload (HostToContainer), where Triton hits every kernel.
    summary = cluster.triton("app")
    assert summary["kernels"] == summary["hits"] == 6, summary
    assert summary["cache_dir"] == "/cache/triton"


def test_a_killed_daemon_container_restarts_and_the_running_workload_recovers(cluster, containers):
    cluster.start_workload("app")
    cluster.start_daemon("mcvfs")
    assert cluster.triton("app")["hits"] == 6
    log = cluster.start_probe("app", "crash")
    containers.podman("kill", "--signal", "KILL", "mcvfs")
    killed = time.monotonic()
    containers.podman("start", "mcvfs")  # what the kubelet does for a crashed container of a running pod
    deadline = killed + GUARD
    while True:
        events = [e for e in cluster.probe_events(log) if "outcome" in e]
        if any(e["outcome"] != "ok" for e in events) and events[-1]["outcome"] == "ok":
            break
        assert time.monotonic() < deadline, f"the workload never saw the mount again: {events}\n{cluster.logs('mcvfs')}"
        time.sleep(0.05)
    summary = cluster.stop_probe("app", log)
    # Lookups failed while no daemon served (the connection was aborted), never because the workload saw the
    # bare directory under the mount: the new mount went in beneath the stale one.
    assert set(summary["outcomes"]) <= {"ok", "ENOTCONN", "ECONNABORTED"}, summary
    assert summary["failures"] > 0
    assert summary["failed_for"] < 60, summary
    print(f"\nkilled daemon container: lookups failed for {summary['failed_for']:.3f} s "
          f"({summary['outcomes']}), restart included")
    assert "replaced the stale mount" in cluster.logs("mcvfs")
    assert [fstype for _, fstype in cluster.top_mount()] == ["fuse.mcvfs"], "the stale mount was left behind"
    # The workload was never restarted and its next Triton run hits.
    assert cluster.triton("app")["hits"] == 6


def test_a_rolling_update_takes_over_without_a_failed_lookup(cluster, containers):
    cluster.start_workload("app")
    cluster.start_daemon("mcvfs-old")
    ((old_id, _),) = cluster.top_mount()
    log = cluster.start_probe("app", "update")
    # maxSurge: the new pod starts beside the old one and becomes ready once it has taken the mountpoint over...
    cluster.start_daemon("mcvfs-new")
    ((new_id, _),) = cluster.top_mount()
    assert new_id != old_id
    old_ready = containers.podman("exec", "mcvfs-old", "test", "-e", cluster.ready_file, check=False).returncode
    assert old_ready != 0, "the replaced pod still claims to be ready"
    # ...then Kubernetes stops the old pod.
    containers.podman("stop", "--time", "30", "mcvfs-old", timeout=GUARD)
    assert containers.podman("inspect", "-f", "{{.State.ExitCode}}", "mcvfs-old").stdout.strip() == "0"
    time.sleep(0.5)  # lookups keep going after the old daemon is gone
    summary = cluster.stop_probe("app", log)
    assert summary["failures"] == 0 and summary["probes"] > 0, summary
    assert "served by a newer mount" in cluster.logs("mcvfs-old")
    assert [fstype for _, fstype in cluster.top_mount()] == ["fuse.mcvfs"]
    assert cluster.triton("app")["hits"] == 6


def test_the_kserve_example_reads_the_daemonsets_mount():
    """kserve-inferenceservice.yaml binds the DaemonSet's hostPath the way pod-example.yaml does, and points
    vLLM at a mount below it."""
    isvc = of_kind("InferenceService")["spec"]["predictor"]
    (container,) = isvc["containers"]
    ((mount, volume),) = [(m, v) for m in container["volumeMounts"] for v in isvc["volumes"] if v["name"] == m["name"]]
    daemon = of_kind("DaemonSet")["spec"]["template"]["spec"]
    assert volume["hostPath"]["path"] in {v.get("hostPath", {}).get("path") for v in daemon["volumes"]}
    assert mount["mountPropagation"] == "HostToContainer"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VLLM_CACHE_ROOT"].startswith(mount["mountPath"] + "/")
    assert env["TRITON_CACHE_DIR"] == env["VLLM_CACHE_ROOT"] + "/triton"
