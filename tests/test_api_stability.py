"""`buf breaking` against the committed image of the v1 API (protos/stord-v1.binpb) guards stord.v1.

`make lint` runs the same check on the real protos; these tests show that it passes today, that it fails on a
change that would break generated clients, and that it lets additive changes through.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
IMAGE = PROTOS / "stord-v1.binpb"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def buf() -> Path:
    if not BUF.exists():
        subprocess.run(["make", "-s", str(BUF.relative_to(ROOT))], cwd=ROOT, check=True, capture_output=True)
    return BUF


def _breaking(buf: Path, protos: Path) -> subprocess.CompletedProcess[str]:
    arguments = [str(buf), "breaking", "--against", str(IMAGE)]
    return subprocess.run(arguments, cwd=protos, capture_output=True, text=True, timeout=60)


def _copy_protos(tmp_path: Path) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy, ignore=shutil.ignore_patterns("*.binpb"))
    return copy


def test_the_protos_are_compatible_with_the_v1_image(buf: Path) -> None:
    result = _breaking(buf, PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_renumbering_a_field_is_a_breaking_change(buf: Path, tmp_path: Path) -> None:
    protos = _copy_protos(tmp_path)
    jobs = protos / "stord" / "v1" / "jobs.proto"
    source = jobs.read_text()
    assert "  string lease_token = 2;\n" in source
    jobs.write_text(source.replace("  string lease_token = 2;\n", "  string lease_token = 20;\n", 1))
    result = _breaking(buf, protos)
    assert result.returncode != 0
    assert 'field "2" with name "lease_token" on message "JobLease" was deleted' in result.stdout


def test_adding_a_field_is_not_a_breaking_change(buf: Path, tmp_path: Path) -> None:
    protos = _copy_protos(tmp_path)
    jobs = protos / "stord" / "v1" / "jobs.proto"
    source = jobs.read_text()
    anchor = "  string lease_token = 2;\n"
    jobs.write_text(source.replace(anchor, anchor + "  // note is new.\n  string note = 3;\n", 1))
    result = _breaking(buf, protos)
    assert result.returncode == 0, result.stdout + result.stderr
