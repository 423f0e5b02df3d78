"""Generate the Python code of the protos into the client package (or another folder, for the freshness test).

Run through `make proto`. Output: messages (`*_pb2.py`), gRPC stubs (`*_pb2_grpc.py`) and type stubs for both
(`.pyi`, by mypy-protobuf).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
CLIENT = ROOT / "client"


def proto_files() -> list[Path]:
    """Return every contract, in a stable order."""
    return sorted((PROTOS / "stord" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write the generated code for every proto under `out_dir` (as `stord/v1/...`)."""
    plugins = Path(sys.executable).parent
    arguments = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{resources.files('grpc_tools') / '_proto'}",  # google/protobuf/*.proto
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(path.relative_to(PROTOS)) for path in proto_files()),
    ]
    if protoc.main(arguments) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else CLIENT)
