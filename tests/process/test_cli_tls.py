"""Every CLI command that dials a daemon, against a TLS daemon and an mTLS daemon with API keys."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stord.client import Client, Tls, make_event
from stord.server.config import Settings
from stord.server.rpc.auth import Role
from tests.harness.auth import Tenant, write_keys
from tests.harness.certs import Certificates, make_certificates
from tests.harness.daemon import DaemonThread
from tests.harness.served import STORD

pytestmark = pytest.mark.process

TENANT = Tenant("cli", "cli-space", "cli-user", Role.ADMIN)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _daemon(certificates: Certificates, *, client_ca: Path | None, keys_file: Path | None) -> DaemonThread:
    settings = Settings(
        listen="127.0.0.1:0",
        database="memory://",
        tls_cert=certificates.server_cert,
        tls_key=certificates.server_key,
        tls_client_ca=client_ca,
        api_keys_file=keys_file,
        log_level="warning",
    )
    return DaemonThread(settings).start()


@pytest.fixture(scope="module")
def tls_daemon(certificates: Certificates) -> Iterator[DaemonThread]:
    thread = _daemon(certificates, client_ca=None, keys_file=None)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def mtls_daemon(
    certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonThread]:
    keys_file = write_keys(tmp_path_factory.mktemp("keys") / "keys.yaml", [TENANT])
    thread = _daemon(certificates, client_ca=certificates.ca, keys_file=keys_file)
    yield thread
    thread.stop()


def stord(*arguments: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no `STORD_*` variable of the test's own environment, plus `env`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("STORD_")}
    return subprocess.run(
        [STORD, *map(str, arguments)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def mtls_flags(certificates: Certificates) -> list[str | Path]:
    return [
        "--tls-ca", certificates.ca,
        "--tls-client-cert", certificates.client_cert,
        "--tls-client-key", certificates.client_key,
        "--api-key", TENANT.secret,
    ]  # fmt: skip


def test_every_dialling_command_speaks_tls_with_the_ca(
    tls_daemon: DaemonThread, certificates: Certificates
) -> None:
    flags: list[str | Path] = [
        "--address",
        tls_daemon.target,
        "--tls-ca",
        certificates.ca,
        "--namespace",
        "tls",
    ]
    assert stord("health", *flags[:4]).stdout.strip() == f"{tls_daemon.target}: SERVING"
    assert stord("kv", "set", "greeting", "hello", *flags).returncode == 0
    assert stord("kv", "get", "greeting", *flags).stdout == "hello"
    assert stord("kv", "keys", *flags).stdout == "greeting\n"
    with Client(tls_daemon.target, namespace="tls", tls=Tls(certificates.ca.read_bytes())) as client:
        client.jobs.enqueue("mail", {"to": "ada"})
        client.events.insert([make_event("s-1", "a-1", "custom", event_id="e-1")])
    stats = stord("jobs", "stats", "mail", "--json", *flags)
    assert json.loads(stats.stdout)["pending"] == 1
    tail = subprocess.Popen(
        [STORD, "events", "tail", "--count", "1", *map(str, flags)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith("stord: tailing events of ")  # subscribed
        with Client(tls_daemon.target, namespace="tls", tls=Tls(certificates.ca.read_bytes())) as client:
            client.events.insert([make_event("s-1", "a-1", "custom", event_id="e-2")])
        stdout, _ = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert json.loads(stdout)["id"] == "e-2"


def test_the_environment_gives_the_same_options(tls_daemon: DaemonThread, certificates: Certificates) -> None:
    env = {"STORD_ADDRESS": tls_daemon.target, "STORD_TLS_CA": str(certificates.ca), "STORD_NAMESPACE": "env"}
    assert stord("kv", "set", "k", "v", env=env).returncode == 0
    assert stord("kv", "get", "k", env=env).stdout == "v"
    assert stord("health", env=env).returncode == 0
    # A flag wins over its variable.
    assert stord("kv", "get", "k", "--namespace", "other", env=env).returncode == 1


def test_health_of_a_tls_daemon_from_its_own_settings(
    tls_daemon: DaemonThread, certificates: Certificates
) -> None:
    """The container's HEALTHCHECK: `stord health` with the daemon's environment and the CA to trust."""
    env = {
        "STORD_LISTEN": "0.0.0.0:" + tls_daemon.target.rsplit(":", 1)[1],
        "STORD_TLS_CERT": str(certificates.server_cert),
        "STORD_TLS_KEY": str(certificates.server_key),
        "STORD_TLS_CA": str(certificates.ca),
    }
    assert stord("health", env=env).returncode == 0
    untrusted = stord("health", "--timeout", "2", env={**env, "STORD_TLS_CA": ""})
    assert untrusted.returncode == 1
    assert "TLS: the daemon's certificate is not trusted" in untrusted.stderr


def test_a_plaintext_command_at_a_tls_daemon_is_told_it_is_tls(tls_daemon: DaemonThread) -> None:
    for command in (["health"], ["kv", "get", "k"], ["jobs", "stats", "q"]):
        failed = stord(*command, "--address", tls_daemon.target, "--timeout", "2")
        assert failed.returncode == 1, command
        assert "serves TLS, and this command spoke plaintext; pass --tls-ca" in failed.stderr, command


def test_a_wrong_server_name_is_reported_as_tls(tls_daemon: DaemonThread, certificates: Certificates) -> None:
    port = tls_daemon.target.rsplit(":", 1)[1]
    flags: list[str | Path] = [
        "--address",
        f"localhost:{port}",
        "--tls-ca",
        certificates.ca,
        "--timeout",
        "2",
    ]
    wrong = stord("kv", "get", "k", *flags, "--tls-server-name", "elsewhere.example")
    assert wrong.returncode == 1
    assert "not trusted for 'elsewhere.example'" in wrong.stderr
    # The certificate names localhost: overriding the name to it connects to 127.0.0.1 by its name.
    right = stord("kv", "get", "k", "--address", tls_daemon.target, "--tls-ca", certificates.ca,
                  "--tls-server-name", "localhost")  # fmt: skip
    assert (right.returncode, right.stderr.strip()) == (1, "stord: k: not found")


def test_mtls_with_an_api_key(mtls_daemon: DaemonThread, certificates: Certificates) -> None:
    flags: list[str | Path] = ["--address", mtls_daemon.target, *mtls_flags(certificates)]
    assert stord("kv", "set", "k", "v", *flags).returncode == 0
    assert stord("kv", "get", "k", *flags).stdout == "v"
    assert json.loads(stord("jobs", "stats", "q", "--json", *flags).stdout)["pending"] == 0
    assert stord("health", *flags).returncode == 0
    with Client(
        mtls_daemon.target,
        api_key=TENANT.secret,
        tls=Tls(
            certificates.ca.read_bytes(),
            certificates.client_key.read_bytes(),
            certificates.client_cert.read_bytes(),
        ),
    ) as client:
        assert client.db.get("k") == b"v"  # in the key's namespace

    no_key = stord("kv", "get", "k", *flags[:-2])
    assert no_key.returncode == 1
    assert "UNAUTHENTICATED" in no_key.stderr


def test_mtls_without_a_client_certificate_says_one_is_required(
    mtls_daemon: DaemonThread, certificates: Certificates
) -> None:
    flags: list[str | Path] = ["--address", mtls_daemon.target, "--tls-ca", certificates.ca, "--timeout", "2"]
    for command in (["health"], ["kv", "get", "k"]):
        failed = stord(*command, *flags)
        assert failed.returncode == 1, command
        assert "TLS: the daemon refused the connection" in failed.stderr, command
        assert "requires a client certificate" in failed.stderr, command


def test_unusable_tls_options_are_usage_errors(tmp_path: Path, certificates: Certificates) -> None:
    missing = stord("kv", "get", "k", "--tls-ca", tmp_path / "absent.pem")
    assert missing.returncode == 2
    assert "--tls-ca (STORD_TLS_CA): cannot read" in missing.stderr
    half = stord("health", "--tls-client-cert", certificates.client_cert)
    assert half.returncode == 2
    assert "--tls-client-cert and --tls-client-key go together" in half.stderr
    misspelt = stord("kv", "get", "k", env={"STORD_TLS": "ture"})
    assert misspelt.returncode == 2  # not quietly plaintext
    assert "STORD_TLS='ture' is not a boolean" in misspelt.stderr
    assert stord("health", "--timeout", "1", env={"STORD_TLS": "nope"}).returncode == 2


def test_stord_tls_reads_each_spelling_of_a_boolean(tls_daemon: DaemonThread) -> None:
    env = {"STORD_ADDRESS": tls_daemon.target, "STORD_TLS_SERVER_NAME": "localhost"}
    for spelling in ("1", "TRUE", "Yes", "on"):
        # TLS trusting the system's roots: the test CA is not among them, so a TLS verification error.
        failed = stord("kv", "get", "k", "--timeout", "2", env=env | {"STORD_TLS": spelling})
        assert failed.returncode == 1, spelling
        assert "TLS: the daemon's certificate is not trusted" in failed.stderr, spelling


def test_a_tls_command_at_a_plaintext_daemon_is_told_so(certificates: Certificates) -> None:
    plain = DaemonThread(Settings(listen="127.0.0.1:0", database="memory://", log_level="warning")).start()
    try:
        failed = stord(
            "kv", "get", "k", "--address", plain.target, "--tls-ca", certificates.ca, "--timeout", "2"
        )
        assert failed.returncode == 1
        assert "TLS: the daemon does not speak TLS at this address (drop the --tls* options)" in failed.stderr
        # Told by the environment, the hint says what to unset.
        env = {"STORD_TLS": "true", "STORD_TLS_CA": str(certificates.ca)}
        failed = stord("kv", "get", "k", "--address", plain.target, "--timeout", "2", env=env)
        assert failed.returncode == 1
        assert "(drop the --tls* options or unset STORD_TLS, STORD_TLS_CA)" in failed.stderr
        # A plaintext command at a plaintext daemon that fails for another reason gets no TLS hint.
        missing = stord("kv", "get", "k", "--address", plain.target)
        assert (missing.returncode, missing.stderr.strip()) == (1, "stord: k: not found")
    finally:
        plain.stop()
