"""The SQLite backend: the embedded default database, every contract in one file."""

from stord.server.backends.sqlite._backend import SqliteBackend

__all__ = ["SqliteBackend"]
