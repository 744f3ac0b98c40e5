"""Guard of the "field numbers are never reused" rule of proto/earthgptx/v1.

``fields.lock.json`` records every field and enum value ever released: name -> [number, type]. A locked entry may
never change number or type, and may disappear only if both its number and its name are ``reserved`` in its
message (enum). New fields are added to the lock by ``deploy/gen_proto.sh`` (``update``); nothing is ever removed
from it. tests/test_events.py checks the committed lock against the committed .proto files.

    python proto/fields_lock.py check     # exit 1 and list the violations
    python proto/fields_lock.py update    # check, then add the new fields to the lock
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parent
LOCK_PATH = PROTO_ROOT / "earthgptx" / "v1" / "fields.lock.json"
PACKAGE_DIR = "earthgptx/v1"

Lock = dict[str, dict[str, list[Any]]]


def compile_descriptors(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc (grpcio-tools) over the package's .proto files and return their descriptors."""
    files = sorted(p.relative_to(proto_root).as_posix() for p in (proto_root / PACKAGE_DIR).glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}", f"--descriptor_set_out={out}", *files],
            check=True,
        )
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        kind = field.type_name.lstrip(".")
    else:
        kind = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_").lower()
    return f"repeated {kind}" if field.label == field.LABEL_REPEATED else kind


def current_entries(descriptors: descriptor_pb2.FileDescriptorSet) -> tuple[Lock, dict[str, tuple[set[int], set[str]]]]:
    """(entries, reserved): every message/enum of the package -> {name: [number, type]}, and its reservations."""
    entries: Lock = {}
    reserved: dict[str, tuple[set[int], set[str]]] = {}

    def visit_enum(prefix: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        name = f"{prefix}.{enum.name}"
        entries[name] = {v.name: [v.number, "enum value"] for v in enum.value}
        numbers = {n for r in enum.reserved_range for n in range(r.start, r.end + 1)}  # enum ranges are inclusive
        reserved[name] = (numbers, set(enum.reserved_name))

    def visit_message(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        entries[name] = {f.name: [f.number, _field_type(f)] for f in message.field}
        numbers = {n for r in message.reserved_range for n in range(r.start, r.end)}
        reserved[name] = (numbers, set(message.reserved_name))
        for nested in message.nested_type:
            visit_message(name, nested)
        for enum in message.enum_type:
            visit_enum(name, enum)

    for file in descriptors.file:
        if not file.name.startswith(PACKAGE_DIR + "/"):
            continue
        for message in file.message_type:
            visit_message(file.package, message)
        for enum in file.enum_type:
            visit_enum(file.package, enum)
    return entries, reserved


def violations(lock: Lock, descriptors: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every way the .proto files break the lock (empty when compatible)."""
    entries, reserved = current_entries(descriptors)
    problems: list[str] = []
    for type_name, locked_fields in sorted(lock.items()):
        if type_name not in entries:
            problems.append(f"{type_name} was removed; released types stay (deprecate them instead)")
            continue
        fields = entries[type_name]
        numbers, names = reserved[type_name]
        by_number = {number: name for name, (number, _) in fields.items()}
        for field_name, (number, kind) in sorted(locked_fields.items()):
            if field_name in fields:
                if fields[field_name] != [number, kind]:
                    problems.append(
                        f"{type_name}.{field_name} changed from {number} ({kind}) to "
                        f"{fields[field_name][0]} ({fields[field_name][1]}); add a new field instead"
                    )
                continue
            holder = by_number.get(number)
            if holder is not None:
                problems.append(f"{type_name}: number {number} of removed {field_name!r} is reused by {holder!r}")
            elif number not in numbers or field_name not in names:
                problems.append(
                    f"{type_name}.{field_name} ({number}) was removed without `reserved {number};` and "
                    f"`reserved \"{field_name}\";`"
                )
    return problems


def updated(lock: Lock, descriptors: descriptor_pb2.FileDescriptorSet) -> Lock:
    """The lock plus the fields and types that are new; existing entries are never touched."""
    entries, _ = current_entries(descriptors)
    merged: Lock = {name: dict(fields) for name, fields in lock.items()}
    for type_name, fields in entries.items():
        target = merged.setdefault(type_name, {})
        for field_name, value in fields.items():
            target.setdefault(field_name, value)
    return {name: dict(sorted(fields.items(), key=lambda kv: kv[1][0])) for name, fields in sorted(merged.items())}


def dump_lock(lock: Lock) -> str:
    """One line per field, so that a diff of the lock reads like the change it records."""
    blocks = []
    for type_name, fields in lock.items():
        rows = ",\n".join(f"    {json.dumps(name)}: {json.dumps(value)}" for name, value in fields.items())
        blocks.append(f"  {json.dumps(type_name)}: {{\n{rows}\n  }}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def load_lock(path: Path = LOCK_PATH) -> Lock:
    return json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    lock = load_lock()
    descriptors = compile_descriptors()
    problems = violations(lock, descriptors)
    for problem in problems:
        print(f"fields_lock: {problem}", file=sys.stderr)  # noqa: T201 - command-line tool
    if problems:
        return 1
    if command == "update":
        LOCK_PATH.write_text(dump_lock(updated(lock, descriptors)))
    elif command != "check":
        print(f"usage: {argv[0]} check|update", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
