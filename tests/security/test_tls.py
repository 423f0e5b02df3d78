"""TLS and mutual TLS through the real gRPC API, with certificates made for the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stord.client import Client, EventIngestor, Tls, Unavailable, make_event
from stord.server.config import Settings
from stord.server.rpc.auth import Role
from tests.harness.auth import Tenant, write_keys
from tests.harness.certs import Certificates, make_certificates
from tests.harness.daemon import DaemonThread

TENANT = Tenant("mtls", "secure", "svc", Role.READ_WRITE)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _daemon(
    certificates: Certificates, *, client_ca: Path | None, keys_file: Path | None = None
) -> DaemonThread:
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
    thread = _daemon(certificates, client_ca=None)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def mtls_daemon(
    certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonThread]:
    keys_file = tmp_path_factory.mktemp("mtls") / "keys.yaml"
    thread = _daemon(certificates, client_ca=certificates.ca, keys_file=write_keys(keys_file, [TENANT]))
    yield thread
    thread.stop()


def _trusting(certificates: Certificates, *, with_client_certificate: bool = False) -> Tls:
    if not with_client_certificate:
        return Tls(root_certificates=certificates.ca.read_bytes())
    return Tls(
        root_certificates=certificates.ca.read_bytes(),
        private_key=certificates.client_key.read_bytes(),
        certificate_chain=certificates.client_cert.read_bytes(),
    )


def test_a_client_that_trusts_the_ca_talks_tls(tls_daemon: DaemonThread, certificates: Certificates) -> None:
    with Client(tls_daemon.target, tls=_trusting(certificates), namespace="tls") as client:
        client.db.set("k", b"v")
        assert client.db.get("k") == b"v"


def test_a_plaintext_client_cannot_talk_to_a_tls_daemon(tls_daemon: DaemonThread) -> None:
    with Client(tls_daemon.target, timeout=2) as client, pytest.raises(Unavailable):
        client.db.get("k")


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_daemon: DaemonThread) -> None:
    with Client(tls_daemon.target, tls=True, timeout=2) as client, pytest.raises(Unavailable):
        client.db.get("k")


def test_mtls_requires_a_client_certificate(mtls_daemon: DaemonThread, certificates: Certificates) -> None:
    anonymous = Client(mtls_daemon.target, tls=_trusting(certificates), api_key=TENANT.secret, timeout=2)
    with anonymous, pytest.raises(Unavailable):
        anonymous.db.get("k")
    tls = _trusting(certificates, with_client_certificate=True)
    with Client(mtls_daemon.target, tls=tls, api_key=TENANT.secret) as client:
        client.db.set("k", b"v")
        assert client.db.get("k") == b"v"


def test_tls_key_and_certificate_go_together(certificates: Certificates) -> None:
    with pytest.raises(ValueError, match="go together"):
        Settings(tls_cert=certificates.server_cert)


def test_the_event_ingestor_speaks_tls_with_a_key(
    mtls_daemon: DaemonThread, certificates: Certificates
) -> None:
    tls = _trusting(certificates, with_client_certificate=True)
    with EventIngestor(mtls_daemon.target, api_key=TENANT.secret, tls=tls) as ingestor:
        ingestor.add(make_event("s1", "a1", "custom"))
        ingestor.flush(timeout=10)
    with Client(mtls_daemon.target, tls=tls, api_key=TENANT.secret) as client:
        assert client.events.count(session_id="s1") == 1
