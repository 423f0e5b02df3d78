"""The schema: numbered SQL files per dialect (`sqlite/`, `postgres/`), applied in order by the daemon.

Installed as the package `stord.server.migrations` (setup.py maps it) so that the wheel ships these very
files; `stord.server.schema.load_migrations` reads them. Never edit a released file: add the next number.
"""
