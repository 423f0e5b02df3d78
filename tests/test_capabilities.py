"""Each backend serves exactly the contracts it declares: the declaration is what the tests parametrize by."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stord.server.backends import KINDS, create_backend, declared_capabilities
from stord.server.config import Settings
from stord.server.kv.port import Keyspace
from stord.server.ports import CONTRACT_CAPABILITIES, Backend, Capability, Unimplemented

ACCESSORS: dict[Capability, Callable[[Backend], object]] = {
    Capability.KEY_VALUE: lambda backend: backend.key_value(Keyspace.DATABASE),
    Capability.DOCUMENTS: lambda backend: backend.documents(),
    Capability.JOBS: lambda backend: backend.jobs(),
    Capability.EVENTS: lambda backend: backend.events(),
    Capability.AGENTS: lambda backend: backend.agents(),
    Capability.MANIFESTS: lambda backend: backend.manifests(),
    Capability.TRANSFER: lambda backend: backend.transfer(),
}

URLS = {
    "memory": "memory://",
    "sqlite": "sqlite:///{directory}/stord.db",
    "postgres": "postgresql://stord@127.0.0.1:1/unused",  # built, never opened
    "redis": "redis://127.0.0.1:1/0",
}


def test_every_contract_capability_has_an_accessor() -> None:
    assert set(ACCESSORS) == CONTRACT_CAPABILITIES


@pytest.mark.parametrize("kind", KINDS)
def test_a_backend_serves_exactly_the_contracts_it_declares(kind: str, tmp_path: Path) -> None:
    backend = create_backend(URLS[kind].format(directory=tmp_path), Settings())
    assert backend.kind == kind
    assert backend.capabilities == declared_capabilities(kind)
    for capability, accessor in ACCESSORS.items():
        if capability in backend.capabilities:
            accessor(backend)
        else:
            with pytest.raises(Unimplemented):
                accessor(backend)


def test_every_backend_serves_key_value_and_the_databases_serve_everything_else() -> None:
    # DESIGN 3: any backend fills either role; Redis serves key-value only.
    for kind in KINDS:
        served = declared_capabilities(kind) & CONTRACT_CAPABILITIES
        assert Capability.KEY_VALUE in served
        expected = {Capability.KEY_VALUE, Capability.TRANSFER} if kind == "redis" else None
        if expected is not None:
            assert served == expected
        else:
            assert served >= CONTRACT_CAPABILITIES - {Capability.TRANSFER}
