"""The shape of the code: imports run one way (orchestrator -> fleet <- workers), no private
name (`_x`) of one of our modules is used by another, and neither the shared core nor the
control plane can reach torch, transformers or huggingface_hub."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> our packages it may import
ALLOWED = {"fleet": {"fleet"}, "orchestrator": {"fleet", "orchestrator"}, "workers": {"fleet", "workers"}}
HEAVY = ("torch", "transformers", "huggingface_hub")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in the file names (top level and inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def wrong_way_imports() -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if top in ALLOWED and top not in allowed:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
                if package != "workers" and top in HEAVY:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module} (no torch side here)")
    return bad


def private_names_crossing(path: Path) -> list[str]:
    """`from ours import _x` and `ours_module._x` in the file (ours: one of ALLOWED's packages)."""
    tree = ast.parse(path.read_text(), str(path))
    bad, modules = [], set()

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] in ALLOWED
        ):
            for alias in node.names:
                if private(alias.name):
                    bad.append(f"{node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in ALLOWED)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if private(node.attr):
                bad.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def test_no_private_name_crosses_modules() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{where}"
        for package in ALLOWED
        for path in sorted((ROOT / package).rglob("*.py"))
        for where in private_names_crossing(path)
    ]
    assert bad == []


def test_the_private_name_checker_sees_a_crossing(tmp_path: Path) -> None:
    path = tmp_path / "crossing.py"
    path.write_text("from workers import hub\nfrom workers.resolver import _locate_local\nhub._probe_cache.clear()\n")
    assert private_names_crossing(path) == [
        "2: from workers.resolver import _locate_local",
        "3: hub._probe_cache",
    ]


def test_imports_run_one_way() -> None:
    assert wrong_way_imports() == []


def test_the_import_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    """A check that cannot fail proves nothing: a file importing the wrong way is reported."""
    path = tmp_path / "wrong.py"
    path.write_text("import os\ndef f():\n    from workers.core import run_job\n    import torch.nn\n")
    assert [m for _, m in imported_modules(path)] == ["os", "workers.core", "torch.nn"]


def test_every_package_is_installed() -> None:
    """pyproject's setuptools `packages` names every package of ours (workers.tiny included), so
    an installed worker has all of its code."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in ALLOWED
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert found - listed == set()


def test_the_control_plane_never_imports_torch() -> None:
    """Every module of fleet/ and orchestrator/, imported for real, leaves torch unloaded."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import fleet, orchestrator\n"
        "for pkg in (fleet, orchestrator):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_celery_tools_work_without_torch() -> None:
    """`celery -A fleet.broker ...` loads a configured app without importing torch."""
    code = (
        "import sys\n"
        "from celery.bin.celery import find_app\n"
        "app = find_app('fleet.broker')\n"
        "assert app.conf.task_serializer == 'json', app.conf.task_serializer\n"
        "assert app.conf.broker_url.startswith('redis://'), app.conf.broker_url\n"
        f"sys.exit(1 if any(m.split('.')[0] in {HEAVY!r} for m in sys.modules) else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
