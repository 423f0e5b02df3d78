"""`stord keys add | list | revoke`: manage the API keys file; a running daemon picks changes up on SIGHUP."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from stord.server.ports import InvalidArgument
from stord.server.rpc.auth import (
    ApiKey,
    KeysFileError,
    Role,
    hash_key,
    load_keys_file,
    new_key,
    write_keys_file,
)
from stord.server.rpc.calls import resolve_namespace, resolve_principal

__all__ = ["add_keys_commands", "run_keys_command"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_keys_commands(commands: Any) -> None:
    """Add `keys` and its subcommands to the top-level subparsers."""
    keys = commands.add_parser("keys", help="manage API keys (send SIGHUP to the daemon to apply)")
    keys.add_argument(
        "--file",
        type=Path,
        default=None,
        help="the keys file (default: STORD_API_KEYS_FILE)",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True)
    add = actions.add_parser("add", help="create a key, print it once, store only its hash")
    add.add_argument("--namespace", required=True, help="the only namespace the key reaches")
    add.add_argument("--principal", required=True, help="who the caller is (owner of its agents)")
    add.add_argument("--role", required=True, choices=[role.value for role in Role])
    add.add_argument("--id", dest="key_id", help="a public name for the key (default: random)")
    actions.add_parser("list", help="list keys: id, namespace, principal, role (never the hash)")
    revoke = actions.add_parser("revoke", help="remove a key by id")
    revoke.add_argument("key_id", metavar="ID")


def _keys_file(arguments: argparse.Namespace) -> Path | None:
    if arguments.file is not None:
        return Path(arguments.file)
    configured = os.environ.get("STORD_API_KEYS_FILE")
    return Path(configured) if configured else None


def run_keys_command(arguments: argparse.Namespace) -> int:
    """Run one `stord keys` subcommand; return the exit status."""
    path = _keys_file(arguments)
    if path is None:
        print("stord keys: give --file or set STORD_API_KEYS_FILE", file=sys.stderr)
        return EXIT_USAGE
    if arguments.keys_command != "add" and not path.exists():  # a typo must not list nothing, successfully
        print(f"stord keys: keys file {path} does not exist", file=sys.stderr)
        return EXIT_FAILURE
    try:
        keys = load_keys_file(path)
        if arguments.keys_command == "add":
            return _add(path, keys, arguments)
        if arguments.keys_command == "revoke":
            return _revoke(path, keys, arguments.key_id)
    except KeysFileError as error:
        print(f"stord keys: {error}", file=sys.stderr)
        return EXIT_FAILURE
    for key in keys:
        print(f"{key.id}\tnamespace={key.namespace}\tprincipal={key.principal}\trole={key.role.value}")
    return EXIT_OK


def _add(path: Path, keys: list[ApiKey], arguments: argparse.Namespace) -> int:
    try:
        namespace = resolve_namespace(arguments.namespace)
        principal = resolve_principal(arguments.principal)
    except InvalidArgument as error:
        print(f"stord keys: {error}", file=sys.stderr)
        return EXIT_USAGE
    key_id = arguments.key_id or f"key-{secrets.token_hex(4)}"
    if any(key.id == key_id for key in keys):
        print(f"stord keys: a key with id {key_id!r} exists", file=sys.stderr)
        return EXIT_USAGE
    secret = new_key()
    entry = ApiKey(key_id, hash_key(secret), namespace, principal, Role(arguments.role))
    write_keys_file(path, [*keys, entry])
    print(f"id: {key_id}", file=sys.stderr)
    print("the key below is shown only this once; stord stores only its SHA-256 hash", file=sys.stderr)
    print(secret)
    return EXIT_OK


def _revoke(path: Path, keys: list[ApiKey], key_id: str) -> int:
    remaining = [key for key in keys if key.id != key_id]
    if len(remaining) == len(keys):
        print(f"stord keys: no key with id {key_id!r}", file=sys.stderr)
        return EXIT_FAILURE
    write_keys_file(path, remaining)
    print(f"revoked {key_id}; send SIGHUP to running daemons to apply", file=sys.stderr)
    return EXIT_OK
