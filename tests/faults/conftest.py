"""Fixtures of the fault tests: a network namespace of the test's own for the servers behind a partition."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.network import IsolatedHost, isolated_host


@pytest.fixture
def isolated() -> Iterator[IsolatedHost]:
    """A network namespace the test can partition; removed afterwards, and the host checked intact."""
    with isolated_host() as host:
        yield host
