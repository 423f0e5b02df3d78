"""API keys through the real gRPC API: authentication, roles, namespaces from the key, reload, the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog.testing
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from stord.client import Client, PermissionDenied, Unauthenticated
from stord.server.app import ADMIN_SERVICE, Daemon, StartupError
from stord.server.cli.main import main
from stord.server.config import Settings, load_settings
from stord.server.rpc.auth import ACCESS_BY_METHOD, Role, load_keys_file
from stord.server.rpc.registry import CONTRACTS
from stord.v1 import kv_pb2
from tests.harness.auth import Tenant, write_keys
from tests.harness.daemon import DaemonThread


class Secured:
    """A daemon on memory that requires API keys, with one key per role."""

    def __init__(self, directory: Path) -> None:
        self.admin = Tenant("admin", "ops", "root", Role.ADMIN)
        self.writer = Tenant("writer", "shop", "svc-shop", Role.READ_WRITE)
        self.reader = Tenant("reader", "shop", "svc-report", Role.READ_ONLY)
        self.keys_file = write_keys(directory / "keys.yaml", [self.admin, self.writer, self.reader])
        settings = Settings(
            listen="127.0.0.1:0", database="memory://", api_keys_file=self.keys_file, log_level="warning"
        )
        self.thread = DaemonThread(settings).start()

    def client(
        self, tenant: Tenant | None, *, namespace: str | None = None, principal: str | None = None
    ) -> Client:
        secret = tenant.secret if tenant else None
        return Client(self.thread.target, api_key=secret, namespace=namespace, principal=principal)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    daemon = Secured(tmp_path_factory.mktemp("auth"))
    yield daemon
    daemon.thread.stop()


def _all_methods() -> set[str]:
    pool = descriptor_pool.Default()
    services = [contract.service for contract in CONTRACTS] + [ADMIN_SERVICE]
    return {
        f"/{service}/{method.name}"
        for service in services
        for method in pool.FindServiceByName(service).methods
    }


def test_every_rpc_of_every_service_is_classified() -> None:
    assert set(ACCESS_BY_METHOD) == _all_methods()


def test_a_missing_or_unknown_key_is_unauthenticated(secured: Secured) -> None:
    with secured.client(None) as anonymous, pytest.raises(Unauthenticated):
        anonymous.db.get("k")
    stranger = Tenant("x", "shop", "x", Role.ADMIN)  # never written to the file
    with secured.client(stranger) as client, pytest.raises(Unauthenticated):
        client.db.get("k")


def test_a_read_only_key_reads_but_may_not_write(secured: Secured) -> None:
    with secured.client(secured.writer) as writer, secured.client(secured.reader) as reader:
        writer.db.set("price", b"10")
        assert reader.db.get("price") == b"10"  # same namespace, from the keys
        with pytest.raises(PermissionDenied):
            reader.db.set("price", b"0")
        with pytest.raises(PermissionDenied):
            reader.jobs.enqueue("q")
        assert reader.db.get("price") == b"10"


def test_admin_rpcs_need_an_admin_key(secured: Secured) -> None:
    with secured.client(secured.writer) as writer, pytest.raises(PermissionDenied):
        writer.get_info()
    with secured.client(secured.writer) as writer, pytest.raises(PermissionDenied):
        writer.events.apply_retention(1)
    with secured.client(secured.admin) as admin:
        assert admin.get_info().version


def test_namespace_and_principal_come_from_the_key(secured: Secured) -> None:
    with secured.client(secured.writer, namespace="ops") as client, pytest.raises(PermissionDenied):
        client.db.get("k")
    with secured.client(secured.writer, principal="root") as client, pytest.raises(PermissionDenied):
        client.db.get("k")
    with secured.client(secured.writer, namespace="shop", principal="svc-shop") as client:
        client.agents.set("agent://shop/bot", name="bot")
        stored = client.agents.get("agent://shop/bot")
        assert stored is not None
        assert stored.owner == "svc-shop"


def test_health_and_reflection_answer_without_a_key(secured: Secured) -> None:
    with grpc.insecure_channel(secured.thread.target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "stord.v1.DatabaseService" in services


def test_reload_picks_up_new_and_revoked_keys_and_survives_a_bad_file(secured: Secured) -> None:
    newcomer = Tenant("newcomer", "shop", "svc-new", Role.READ_ONLY)
    with secured.client(newcomer) as client:
        with pytest.raises(Unauthenticated):
            client.db.get("k")
        write_keys(secured.keys_file, [secured.admin, secured.writer, secured.reader, newcomer])
        assert secured.thread.daemon.reload_keys()
        assert client.db.get("absent") is None  # on the channel opened before the reload
        secured.keys_file.write_text("keys: [ {id: broken")
        assert not secured.thread.daemon.reload_keys()
        client.db.get("k")  # the old keys stay in force
        secured.keys_file.unlink()
        assert not secured.thread.daemon.reload_keys()
        client.db.get("k")  # so does a missing file
        write_keys(secured.keys_file, [secured.admin, secured.writer, secured.reader])
        assert secured.thread.daemon.reload_keys()
        with pytest.raises(Unauthenticated):
            client.db.get("k")


def test_a_missing_or_malformed_keys_file_stops_startup(tmp_path: Path) -> None:
    missing = Daemon(Settings(database="memory://", api_keys_file=tmp_path / "absent.yaml"))
    with pytest.raises(StartupError, match="does not exist"):
        asyncio.run(missing.start())
    malformed = tmp_path / "keys.yaml"
    malformed.write_text("keys: [{id: a, sha256: nothex, namespace: n, principal: p, role: admin}]")
    with pytest.raises(StartupError, match="sha256"):
        asyncio.run(Daemon(Settings(database="memory://", api_keys_file=malformed)).start())


def test_a_public_address_without_keys_needs_insecure() -> None:
    daemon = Daemon(Settings(listen="0.0.0.0:0", database="memory://"))
    with pytest.raises(StartupError, match="--insecure"):
        asyncio.run(daemon.start())  # refused before any backend opens or port binds
    assert Settings(listen="[::1]:1").listens_on_loopback
    assert Settings(listen="localhost:1").listens_on_loopback
    assert not Settings(listen="10.0.0.1:1").listens_on_loopback


def test_api_keys_over_plaintext_on_a_public_address_are_warned_about(tmp_path: Path) -> None:
    keys_file = write_keys(tmp_path / "keys.yaml", [Tenant("t", "space", "user", Role.READ_WRITE)])
    public = Settings(listen="0.0.0.0:50174", database="memory://", api_keys_file=keys_file)
    with structlog.testing.capture_logs() as logs:
        assert Daemon(public)._load_keys() is not None
    [warning] = logs
    assert (warning["event"], warning["log_level"]) == ("insecure", "warning")
    assert warning["listen"] == public.listen
    assert "bearer keys travel in clear" in warning["reason"]
    # Nothing to say on loopback, or with TLS.
    loopback = public.model_copy(update={"listen": "127.0.0.1:50174"})
    tls = public.model_copy(update={"tls_cert": tmp_path / "cert.pem", "tls_key": tmp_path / "key.pem"})
    for quiet in (loopback, tls):
        with structlog.testing.capture_logs() as logs:
            assert Daemon(quiet)._load_keys() is not None
        assert logs == []


def test_a_reload_without_a_keys_file_says_there_is_nothing_to_reload() -> None:
    with structlog.testing.capture_logs() as logs:
        assert not Daemon(Settings(database="memory://")).reload_keys()
    assert [(log["event"], log["log_level"]) for log in logs] == [("api_keys_not_reloaded", "warning")]
    assert "no API keys file" in logs[0]["reason"]


def test_keys_commands_add_list_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_file = tmp_path / "keys.yaml"
    arguments = ["keys", "--file", str(keys_file), "add", "--namespace", "shop", "--principal", "svc"]
    assert main([*arguments, "--role", "read-write", "--id", "shop-1"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("stord_")
    assert secret not in keys_file.read_text()
    [stored] = load_keys_file(keys_file)
    assert (stored.id, stored.namespace, stored.principal, stored.role) == (
        "shop-1",
        "shop",
        "svc",
        Role.READ_WRITE,
    )
    assert keys_file.stat().st_mode & 0o077 == 0
    assert main(["keys", "--file", str(keys_file), "list"]) == 0
    listed = capsys.readouterr().out
    assert "shop-1" in listed
    assert stored.sha256 not in listed
    assert main(["keys", "--file", str(keys_file), "revoke", "shop-1"]) == 0
    assert load_keys_file(keys_file) == []
    assert main(["keys", "--file", str(keys_file), "revoke", "shop-1"]) == 1


def test_keys_commands_other_than_add_need_the_file_to_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.yaml"
    for command in (["list"], ["revoke", "shop-1"]):
        assert main(["keys", "--file", str(missing), *command]) == 1
        assert capsys.readouterr().err == f"stord keys: keys file {missing} does not exist\n"
    assert not missing.exists()


@pytest.mark.parametrize(
    "authorization",
    # A long key stays under gRPC's 8 KiB metadata soft limit: above it the transport itself refuses the
    # call, at random, with RESOURCE_EXHAUSTED, before stord sees it.
    ["", "Bearer", "Bearer ", "bearer  ", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 4000, "Token abc"],
)
def test_malformed_authorization_is_unauthenticated(secured: Secured, authorization: str) -> None:
    with grpc.insecure_channel(secured.thread.target) as channel:
        get = channel.unary_unary(
            "/stord.v1.DatabaseService/Get",
            request_serializer=kv_pb2.DatabaseServiceGetRequest.SerializeToString,
            response_deserializer=kv_pb2.DatabaseServiceGetResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            get(
                kv_pb2.DatabaseServiceGetRequest(key="k"),
                metadata=(("authorization", authorization),),
                timeout=5,
            )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_the_bearer_scheme_is_case_insensitive(secured: Secured) -> None:
    with grpc.insecure_channel(secured.thread.target) as channel:
        get = channel.unary_unary(
            "/stord.v1.DatabaseService/Get",
            request_serializer=kv_pb2.DatabaseServiceGetRequest.SerializeToString,
            response_deserializer=kv_pb2.DatabaseServiceGetResponse.FromString,
        )
        metadata = (("authorization", f"bearer {secured.writer.secret}"),)
        assert not get(kv_pb2.DatabaseServiceGetRequest(key="absent"), metadata=metadata, timeout=5).found


def test_security_settings_come_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "STORD_API_KEYS_FILE": str(tmp_path / "keys.yaml"),
        "STORD_INSECURE": "1",
        "STORD_TLS_CERT": "cert.pem",
        "STORD_TLS_KEY": "key.pem",
        "STORD_TLS_CLIENT_CA": "ca.pem",
    }
    settings = load_settings(environ=environ)
    assert settings.api_keys_file == tmp_path / "keys.yaml"
    assert settings.insecure
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (
        Path("cert.pem"),
        Path("key.pem"),
        Path("ca.pem"),
    )
