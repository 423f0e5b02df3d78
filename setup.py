"""Map `stord.server*` from server/, and the top-level migrations/ as `stord.server.migrations`.

Everything else is in pyproject.toml; only this mapping needs code (package discovery plus one package
elsewhere).
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages("server", include=["stord.server*"]),
        *(f"stord.server.migrations{dialect}" for dialect in ("", ".sqlite", ".postgres")),
    ],
    package_dir={"": "server", "stord.server.migrations": "migrations"},
)
