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
    return {variable["name"]: variable["value"] for variable in container.get("env", [])}


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
