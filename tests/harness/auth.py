"""Keys files and authenticated daemons for the security tests."""

from __future__ import annotations

from pathlib import Path

from stord.server.rpc.auth import ApiKey, Role, hash_key, new_key, write_keys_file

__all__ = ["Tenant", "write_keys"]


class Tenant:
    """One key of a keys file: the secret a client sends and what the file says about it."""

    def __init__(self, key_id: str, namespace: str, principal: str, role: Role) -> None:
        self.secret = new_key()
        self.entry = ApiKey(key_id, hash_key(self.secret), namespace, principal, role)


def write_keys(path: Path, tenants: list[Tenant]) -> Path:
    """Write a keys file holding the tenants' hashes; return its path."""
    write_keys_file(path, [tenant.entry for tenant in tenants])
    return path
