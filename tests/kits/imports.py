"""The import graph of the repository's packages, read from the source (AST), never by importing it.

``Module.imports`` are every import statement of a file (lazy ones too); ``Module.load_time`` only those that run
when the module is imported (module and class bodies, not functions, not ``if TYPE_CHECKING:``).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ("earthgptx", "services")


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    # Every module an import statement names, anywhere in the file, with its line.
    imports: list[tuple[str, int]] = field(default_factory=list)
    # Only those that run when the module is imported (module body, not functions, not ``if TYPE_CHECKING``).
    load_time: list[tuple[str, int]] = field(default_factory=list)


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _named(node: ast.Import | ast.ImportFrom, module: Module) -> Iterator[str]:
    """The modules an import statement may load: ``from a import b`` names ``a`` and, if it is one, ``a.b``."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    if node.level:
        package = module.name if module.is_package else module.name.rpartition(".")[0]
        base_parts = package.split(".")
        if node.level > 1:
            base_parts = base_parts[: -(node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    yield base
    for alias in node.names:
        if alias.name != "*":
            yield f"{base}.{alias.name}"


def _walk(body: list[ast.stmt], module: Module, load_time: bool) -> None:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _named(node, module):
                module.imports.append((name, node.lineno))
                if load_time:
                    module.load_time.append((name, node.lineno))
        elif isinstance(node, ast.If):
            _walk(node.body, module, load_time and not _is_type_checking(node.test))
            _walk(node.orelse, module, load_time)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                _walk(block, module, load_time)
        elif isinstance(node, ast.With):
            _walk(node.body, module, load_time)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            _walk(node.body, module, False)
        elif isinstance(node, ast.ClassDef):
            _walk(node.body, module, load_time)  # a class body runs at import
        else:
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for name in _named(child, module):
                        module.imports.append((name, child.lineno))


def read_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name, is_package = _module_name(root, path)
            module = Module(name, path, is_package)
            _walk(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, module, True)
            modules[name] = module
    return modules


def parents(name: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _first_per_line(module: Module, matches: list[tuple[str, int]]) -> list[str]:
    """One report per import statement: the first name it imports that breaks the rule."""
    seen: set[int] = set()
    found = []
    for name, line in matches:
        if line not in seen:
            seen.add(line)
            found.append(f"{module.name}:{line} imports {name}")
    return found


def library_imports_of_services(modules: dict[str, Module]) -> list[str]:
    return [
        violation
        for m in modules.values() if m.name.split(".")[0] == "earthgptx"
        for violation in _first_per_line(m, [(n, line) for n, line in m.imports if n.split(".")[0] == "services"])
    ]


def service_names(modules: dict[str, Module]) -> set[str]:
    return {m.name.split(".")[1] for m in modules.values() if m.name.startswith("services.") and m.is_package}


def services_importing_each_other(modules: dict[str, Module]) -> list[str]:
    services = service_names(modules)
    found = []
    for m in modules.values():
        own = m.name.split(".")
        if own[0] != "services" or len(own) < 2:
            continue
        others = [
            (name, line) for name, line in m.imports
            if (parts := name.split("."))[0] == "services" and len(parts) > 1 and parts[1] != own[1]
            and parts[1] in services
        ]
        found.extend(_first_per_line(m, others))
    return found


def heavy_import_chain(modules: dict[str, Module], start: str, heavy: str = "torch") -> list[str] | None:
    """The chain of load-time imports from ``start`` to a module that imports ``heavy``, or None."""
    origin: dict[str, str | None] = {p: None for p in parents(start) if p in modules}
    queue = deque(origin)
    while queue:
        current = queue.popleft()
        for name, line in modules[current].load_time:
            if name.split(".")[0] == heavy:
                chain = [f"{current}:{line} imports {name}"]
                step = origin[current]
                while step is not None:
                    chain.append(step)
                    step = origin[step]
                return chain[::-1]
            for target in parents(name):
                if target in modules and target not in origin:
                    origin[target] = current
                    queue.append(target)
    return None


def load_time_closure(modules: dict[str, Module], starts: Iterable[str]) -> tuple[set[str], set[str]]:
    """The project modules loaded by importing ``starts``, and the top-level names of everything else they load."""
    seen = {p for s in starts for p in parents(s) if p in modules}
    queue = deque(seen)
    outside: set[str] = set()
    while queue:
        for name, _ in modules[queue.popleft()].load_time:
            inside = [p for p in parents(name) if p in modules]
            if not inside and name.split(".")[0] not in {m.split(".")[0] for m in modules}:
                outside.add(name.split(".")[0])
            for target in inside:
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
    return seen, outside


def compose_torch_free_modules(compose: dict[str, Any]) -> dict[str, str]:
    """``{compose service: module it runs}`` for the services of docker-compose.yml built as the ``services``
    image without the ``ml`` extra (``python -m <module>``)."""
    found = {}
    for name, service in compose["services"].items():
        build = service.get("build") or {}
        if not isinstance(build, dict) or build.get("target") != "services":
            continue
        extras = str((build.get("args") or {}).get("EXTRAS", "platform,api")).split(",")
        command = service.get("command") or []
        if "ml" not in extras and len(command) >= 3 and command[:2] == ["python", "-m"]:
            found[name] = command[2]
    return found


def entry_module(modules: dict[str, Module], name: str) -> str:
    """What ``python -m name`` runs: the package's ``__main__`` when ``name`` is a package that has one."""
    main = f"{name}.__main__"
    return main if main in modules else name
