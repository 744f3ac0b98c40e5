"""pyproject.toml's extras: they list exactly requirements.in's direct dependencies, and the torch-free image's
extras (``platform,api``, docker-compose.yml) install everything its processes import, and no torch.

What an extra installs is read from the installed distributions' metadata (the environment holds the whole lock).
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from kits.imports import compose_torch_free_modules, entry_module, load_time_closure, read_modules
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = "earthgptx"
ML_ONLY = {"torch", "transformers", "tokenizers", "safetensors", "peft", "onnxruntime"}


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared(requirements: list[str], extras: dict[str, list[str]], wanted: set[str]) -> set[str]:
    """Canonical names of the direct dependencies of the base and the ``wanted`` extras (following
    ``earthgptx[...]`` self-references)."""
    names: set[str] = set()
    todo, done = [*requirements, *(r for e in wanted for r in extras[e])], set()
    while todo:
        requirement = Requirement(todo.pop())
        if canonicalize_name(requirement.name) == PROJECT:
            for extra in requirement.extras - done:
                done.add(extra)
                todo.extend(extras[extra])
        else:
            names.add(canonicalize_name(requirement.name))
    return names


def installed_closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (markers evaluated here, no extras of theirs beyond those named)."""
    seen: set[str] = set()
    todo = [Requirement(n) for n in names]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = requirement.extras
        key = name + "".join(sorted(extras))
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        for raw in metadata.requires(name) or []:
            dependency = Requirement(raw)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dependency.marker is None or any(dependency.marker.evaluate(env) for env in environments):
                todo.append(dependency)
    return {n for n in seen if "[" not in n}


def test_extras_list_exactly_the_direct_dependencies(project: dict) -> None:
    lines = (REPO / "requirements.in").read_text().splitlines()
    wanted = {canonicalize_name(Requirement(line).name) for line in lines if line.strip() and not line.startswith("#")}
    extras = project["optional-dependencies"]
    listed = declared(project["dependencies"], extras, set(extras))
    assert not wanted - listed, f"in requirements.in, not in pyproject.toml (add each to its extra): {wanted - listed}"
    assert not listed - wanted, f"in pyproject.toml, not in requirements.in: {listed - wanted}"


def test_the_torch_free_image_installs_what_its_processes_import_and_no_torch(project: dict) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    image_extras = set(compose["services"]["resultstore"]["build"]["args"]["EXTRAS"].split(","))
    assert "ml" not in image_extras
    installs = installed_closure(declared(project["dependencies"], project["optional-dependencies"], image_extras))
    assert not installs & ML_ONLY

    modules = read_modules(REPO)
    processes = [entry_module(modules, m) for m in compose_torch_free_modules(compose).values()]
    starts = [*processes, "earthgptx.runtime", "earthgptx.bus", "earthgptx.store", "earthgptx.geo"]
    _, imported = load_time_closure(modules, starts)
    providers = metadata.packages_distributions()
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    missing = {
        name: providers.get(name) for name in third_party
        if not {canonicalize_name(d) for d in providers.get(name, [])} & installs
    }
    assert not missing, f"imported by the torch-free image's processes but not installed by {image_extras}: {missing}"
