"""The Redis backend: the key-value contract (cache and database roles) over redis-py asyncio."""

from stord.server.backends.redis._backend import RedisBackend

__all__ = ["RedisBackend"]
