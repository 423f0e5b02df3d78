"""The `stord` command (`main`): serve, migrate, health, config, keys, export/import and the debug calls.

`main` parses and dispatches; `keys`, `ops` (calls to a running daemon) and `transfer` hold their commands.
"""

__all__: list[str] = []
