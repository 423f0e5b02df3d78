"""The committed generated code matches the protos: `make proto` was run after the last proto change."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "scripts" / "generate_protos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    _generator().generate(tmp_path)  # type: ignore[attr-defined]
    fresh = tmp_path / "stord" / "v1"
    committed = ROOT / "client" / "stord" / "v1"
    fresh_names = sorted(path.name for path in fresh.iterdir())
    committed_names = sorted(path.name for path in committed.iterdir() if path.suffix in (".py", ".pyi"))
    assert committed_names == fresh_names, "run `make proto`: the set of generated files changed"
    _, mismatched, errors = filecmp.cmpfiles(fresh, committed, fresh_names, shallow=False)
    assert not mismatched + errors, f"run `make proto`: out of date: {mismatched + errors}"
