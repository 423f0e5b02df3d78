"""The memory backend: every contract in dicts, gone when the process ends."""

from stord.server.backends.memory._backend import MemoryBackend

__all__ = ["MemoryBackend"]
