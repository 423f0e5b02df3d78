"""The README's Python examples that carry assertions run, as written, against a daemon on every database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stord.client import Client

README = Path(__file__).resolve().parents[2] / "README.md"


def example(heading: str) -> str:
    """Return the first Python block with assertions in the README section titled `heading`."""
    section = README.read_text(encoding="utf-8").split(f"\n### {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "assert " in block]
    assert blocks, f"no Python example with assertions under {heading!r}"
    return str(blocks[0])


@pytest.mark.parametrize("heading", ["Agents and manifests"])
def test_readme_example_runs(heading: str, database_client: Client) -> None:
    code = example(heading)  # one with assertions: an example that checks nothing could not fail
    exec(compile(code, f"README.md ({heading})", "exec"), {"client": database_client})
