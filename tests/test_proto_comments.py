"""Every message, field, enum and enum value of the protos has a comment that starts with its name.

buf's COMMENTS lint rules (`make lint`) require a comment; this checks how it starts, as in etcd's rpc.proto
("page_size is the most events to return: 0 means 50"), so that a reader of any generated client learns what
each field is and what its zero value means.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"

# Field numbers of the descriptor messages, as SourceCodeInfo paths name them.
_FILE_MESSAGES, _FILE_ENUMS = 4, 5
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS = 2, 3, 4
_ENUM_VALUES = 2


def _descriptors(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    output = tmp_path / "stord.binpb"
    files = sorted(str(path.relative_to(PROTOS)) for path in (PROTOS / "stord" / "v1").glob("*.proto"))
    arguments = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
        "--include_source_info",
        f"--descriptor_set_out={output}",
        *files,
    ]
    assert protoc.main(arguments) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str
) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    yield f"enum {scope}{enum.name}", enum.name, path
    for index, value in enumerate(enum.value):
        yield f"value {scope}{enum.name}.{value.name}", value.name, (*path, _ENUM_VALUES, index)


def _message(
    message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str
) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    name = f"{scope}{message.name}"
    if not message.options.map_entry:
        yield f"message {name}", message.name, path
    for index, field in enumerate(message.field):
        yield f"field {name}.{field.name}", field.name, (*path, _MESSAGE_FIELDS, index)
    for index, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            yield from _message(nested, (*path, _MESSAGE_NESTED, index), f"{name}.")
    for index, enum in enumerate(message.enum_type):
        yield from _enum(enum, (*path, _MESSAGE_ENUMS, index), f"{name}.")


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    for index, message in enumerate(file.message_type):
        yield from _message(message, (_FILE_MESSAGES, index), "")
    for index, enum in enumerate(file.enum_type):
        yield from _enum(enum, (_FILE_ENUMS, index), "")


def test_every_message_field_and_enum_value_comment_starts_with_its_name(tmp_path: Path) -> None:
    checked = 0
    wrong: list[str] = []
    for file in _descriptors(tmp_path).file:
        if not file.name.startswith("stord/"):
            continue
        comments = {
            tuple(location.path): location.leading_comments for location in file.source_code_info.location
        }
        for what, name, path in _elements(file):
            checked += 1
            comment = comments.get(path, "").strip()
            if comment.split(" ", 1)[0].rstrip(":,.") != name:
                wrong.append(f"{file.name}: {what}: {comment[:60]!r}")
    assert checked > 500
    assert not wrong, "comments that do not start with the element's name:\n" + "\n".join(wrong)
