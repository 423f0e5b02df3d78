"""The PostgreSQL backend: psycopg 3 async over a connection pool, schema kept by numbered migrations."""

from stord.server.backends.postgres._backend import PostgresBackend

__all__ = ["PostgresBackend"]
