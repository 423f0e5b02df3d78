"""The deployment examples parse and hang together; the Pod's probe commands work against a real daemon.

No Docker engine or cluster runs here, so the manifests themselves are not applied: these tests check what can
be checked without one.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grpc import insecure_channel
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stord.server.rpc.auth import Role
from tests.harness.auth import Tenant, write_keys
from tests.harness.served import STORD, Served

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _pod() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "pod.yaml").read_text()))
    assert [document["kind"] for document in documents] == ["PersistentVolumeClaim", "Pod"]
    claim, pod = documents
    assert pod["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    pod_spec: dict[str, Any] = pod["spec"]
    return pod_spec


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """Return the literal environment variables (not those taken from a Secret)."""
    return {
        variable["name"]: variable["value"] for variable in container.get("env", []) if "value" in variable
    }


def _probes(sidecar: dict[str, Any]) -> dict[str, list[str]]:
    return {
        name: sidecar[name]["exec"]["command"] for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_the_pod_runs_stord_as_a_sidecar_on_a_shared_unix_socket() -> None:
    spec = _pod()
    (sidecar,) = spec["initContainers"]
    (app,) = spec["containers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: up before the app, down after it
    socket = Path(_environment(sidecar)["STORD_UNIX_SOCKET"])
    assert _environment(app)["STORD_ADDRESS"] == f"unix:{socket}"
    shared = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
    mounts = {
        container["name"]: {(mount["name"], mount["mountPath"]) for mount in container["volumeMounts"]}
        for container in (sidecar, app)
    }
    for name in shared:
        paths = {path for volume, path in mounts["stord"] | mounts["app"] if volume == name}
        assert paths == {str(socket.parent)}
    assert (next(iter(shared)), str(socket.parent)) in mounts["app"]
    for command in _probes(sidecar).values():
        assert command[:4] == ["stord", "health", "--address", f"unix:{socket}"]
    assert _probes(sidecar)["readinessProbe"][4:6] == ["--service", "stord.v1.DatabaseService"]


@pytest.mark.process
def test_the_pods_probe_commands_pass_against_a_daemon_on_a_unix_socket(tmp_path: Path) -> None:
    (sidecar,) = _pod()["initContainers"]
    socket = str(tmp_path / "stord.sock")
    in_pod = _environment(sidecar)["STORD_UNIX_SOCKET"]
    served = Served(tmp_path / "data", "--unix-socket", socket)
    try:
        for name, command in _probes(sidecar).items():
            arguments = [STORD, *(argument.replace(in_pod, socket) for argument in command[1:])]
            result = subprocess.run(arguments, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, f"{name}: {result.stderr}"
            assert result.stdout.strip() == f"unix:{socket}: SERVING"
    finally:
        served.stop(signal.SIGTERM)
    gone = subprocess.run(
        [STORD, "health", "--address", f"unix:{socket}", "--timeout", "1"], capture_output=True
    )
    assert gone.returncode == 1


def test_compose_wires_stord_to_postgres_and_redis() -> None:
    compose = yaml.safe_load((EXAMPLES / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"stord", "postgres", "redis"}
    stord = services["stord"]
    environment = stord["environment"]
    assert environment["STORD_DATABASE_URL"].startswith("postgresql://stord:")
    assert environment["STORD_DATABASE_URL"].endswith("@postgres:5432/stord")
    assert environment["STORD_CACHE_URL"] == "redis://redis:6379/0"
    assert stord["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert all(port.startswith("127.0.0.1:") for port in stord["ports"])
    assert stord["healthcheck"]["test"] == ["CMD", "stord", "health"]
    assert (EXAMPLES / "compose" / stord["build"]["context"]).resolve() == EXAMPLES.parent
    postgres = services["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("stord", "stord")


def test_the_readme_has_a_section_per_example() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    for heading in ("### Kubernetes", "### Docker Compose", "### Node.js"):
        assert heading in readme
    assert (EXAMPLES / "node" / "README.md").exists()


def _tcp_pod() -> tuple[dict[str, Any], dict[str, Any]]:
    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "pod-tcp.yaml").read_text()))
    assert [document["kind"] for document in documents] == ["PersistentVolumeClaim", "NetworkPolicy", "Pod"]
    claim, policy, pod = documents
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["stord-data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert policy["spec"]["podSelector"]["matchLabels"] == pod["metadata"]["labels"]
    return policy, pod["spec"]


def test_the_tcp_pod_uses_the_kubelets_grpc_probes_on_the_port_stord_listens_on() -> None:
    policy, spec = _tcp_pod()
    (sidecar,) = spec["initContainers"]
    (app,) = spec["containers"]
    environment = _environment(sidecar)
    port = int(environment["STORD_LISTEN"].rsplit(":", 1)[1])
    assert environment["STORD_LISTEN"].startswith("0.0.0.0:")  # the kubelet dials the Pod's IP
    assert environment["STORD_API_KEYS_FILE"].startswith("/etc/stord/")  # reachable, so keys are required
    assert "--insecure" not in sidecar["args"]
    assert [entry["containerPort"] for entry in sidecar["ports"]] == [port]
    probes = {name: sidecar[name]["grpc"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert all(probe["port"] == port for probe in probes.values())
    assert "service" not in probes["livenessProbe"]
    assert probes["readinessProbe"]["service"] == "stord.v1.DatabaseService"
    assert _environment(app)["STORD_ADDRESS"] == f"127.0.0.1:{port}"
    assert [rule["port"] for entry in policy["spec"]["ingress"] for rule in entry["ports"]] != [port]


@pytest.mark.process
def test_the_tcp_pods_probes_pass_without_a_key_against_a_daemon_requiring_keys(tmp_path: Path) -> None:
    """What the kubelet's gRPC probe sends: grpc.health.v1 Check, plaintext, no metadata."""
    _, spec = _tcp_pod()
    (sidecar,) = spec["initContainers"]
    keys = write_keys(tmp_path / "keys.yaml", [Tenant("shop", "shop", "shop-api", Role.READ_WRITE)])
    served = Served(tmp_path / "data", "--api-keys-file", str(keys))
    try:
        with insecure_channel(served.address) as channel:
            for name in ("startupProbe", "livenessProbe", "readinessProbe"):
                request = health_pb2.HealthCheckRequest(service=sidecar[name]["grpc"].get("service", ""))
                answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
    finally:
        served.stop(signal.SIGTERM)
