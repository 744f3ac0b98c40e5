"""The repository's import boundaries, read from the source (AST), never by importing it:

- the library (``earthgptx``) never imports ``services``;
- a service never imports another service (``services.<a>`` -> ``services.<b>``);
- the platform modules (``earthgptx.bus``, ``.store``, ``.geo``, ``.runtime``, ``.settings``, ``.events``) never
  import torch, neither themselves nor through the library modules they import at module level (a function-level
  import runs only when called, so it does not count), so that a non-ML service image needs no torch; nor do the
  processes docker-compose.yml runs on that image (``services`` target without the ``ml`` extra).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kits.imports import (
    Module,
    compose_torch_free_modules,
    entry_module,
    heavy_import_chain,
    library_imports_of_services,
    read_modules,
    service_names,
    services_importing_each_other,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PLATFORM = ("earthgptx.bus", "earthgptx.store", "earthgptx.geo", "earthgptx.runtime", "earthgptx.settings",
            "earthgptx.events")  # fmt: skip


def _platform_modules(modules: dict[str, Module]) -> list[str]:
    return sorted(n for n in modules if any(n == p or n.startswith(p + ".") for p in PLATFORM))


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return read_modules(REPO_ROOT)


def test_the_library_never_imports_a_service(modules: dict[str, Module]) -> None:
    assert not library_imports_of_services(modules)


def test_services_never_import_each_other(modules: dict[str, Module]) -> None:
    assert service_names(modules), "no service packages found under services/"
    assert not services_importing_each_other(modules)


def test_platform_modules_do_not_load_torch(modules: dict[str, Module]) -> None:
    platform = _platform_modules(modules)
    assert {"earthgptx.bus", "earthgptx.store", "earthgptx.geo"} <= set(platform)
    chains = {name: heavy_import_chain(modules, name) for name in platform}
    assert not {name: chain for name, chain in chains.items() if chain}


def test_processes_of_the_torch_free_image_do_not_load_torch(modules: dict[str, Module]) -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    runs = {service: entry_module(modules, m) for service, m in compose_torch_free_modules(compose).items()}
    assert runs["resultstore"] == "services.resultstore.__main__" and "migrate" in runs
    assert all(module in modules for module in runs.values()), runs
    chains = {service: heavy_import_chain(modules, module) for service, module in runs.items()}
    assert not {service: chain for service, chain in chains.items() if chain}


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A small tree that breaks every rule: each check finds its violation, and only where it is."""
    files = {
        "earthgptx/__init__.py": "",
        "earthgptx/settings.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
        "earthgptx/model.py": "import torch\n",
        "earthgptx/helpers.py": "def lazy():\n    import torch\n",
        "earthgptx/geo/__init__.py": "from earthgptx.geo.chips import make_tile\n",
        "earthgptx/geo/chips.py": "from .. import helpers\nfrom earthgptx import model\n",
        "earthgptx/bus/__init__.py": "from earthgptx import helpers, settings\n",
        "earthgptx/store.py": "def later():\n    from services.a import handlers\n",
        "services/__init__.py": "",
        "services/a/__init__.py": "",
        "services/a/handlers.py": "from services.a import settings\nfrom services import b\n",
        "services/b/__init__.py": "",
        "services/b/main.py": "from services.a.handlers import X\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    tree = read_modules(tmp_path)
    assert library_imports_of_services(tree) == ["earthgptx.store:2 imports services.a"]
    assert sorted(services_importing_each_other(tree)) == [
        "services.a.handlers:2 imports services.b", "services.b.main:1 imports services.a.handlers",
    ]
    assert heavy_import_chain(tree, "earthgptx.bus") is None  # lazy and TYPE_CHECKING imports do not load torch
    assert heavy_import_chain(tree, "earthgptx.geo") == [
        "earthgptx.geo", "earthgptx.geo.chips", "earthgptx.model:1 imports torch",
    ]
