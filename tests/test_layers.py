"""The architecture, checked: imports point one way, toward the core, and say why.

Layers, lowest first: the foundation (errors, schema, config, ...), data, the
model and its analysis, tracking, training, the search engine, the terminal
presentation, the benchmarks (which race the engine's sweeps), the Python API
and the CLI on top. A module may
import its own layer and the ones below, never one above. The imports are read
from the source with ``ast``, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "satsweep"
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "errors",
            "schema",
            "redact",
            "locks",
            "files",
            "provenance",
            "runtime",
            "quiet",
            "figures",
            "metrics",
            "threshold",
            "links",
            "yamlfiles",
            "config",
        ),
    ),
    ("data", ("data",)),
    ("model", ("models", "batchnorm", "optim", "pipeline", "tta", "baseline", "analysis")),
    ("tracking", ("tracking", "spool")),
    ("training", ("training", "run_figures", "exploration", "reproduction")),
    ("search", ("search", "sync", "server")),
    ("presentation", ("console",)),
    ("benchmarks", ("benchmarks",)),
    ("api", ("api", "__init__")),
    ("cli", ("cli", "__main__")),
]


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _layer(module: str) -> int:
    """The index of the layer that ``module`` (e.g. ``search.job``) belongs to."""
    head = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if head in members or module in members:
            return index
    raise AssertionError(f"satsweep.{module} is in no layer: add it to LAYERS")


def _imports(path: Path) -> set[str]:
    """The satsweep modules ``path`` imports (``from satsweep import x`` names x)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "satsweep":
                names = [f"satsweep.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        found.update(n.removeprefix("satsweep.") for n in names if n.startswith("satsweep."))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    module = _module_name(path)
    own = _layer(module)
    upward = {
        imported: LAYERS[_layer(imported)][0]
        for imported in _imports(path)
        if _layer(imported) > own
    }
    assert not upward, f"satsweep.{module} ({LAYERS[own][0]}) imports a higher layer: {upward}"


def test_the_search_engine_imports_nothing_of_the_edge() -> None:
    edge = {"console", "api", "cli", "__main__", "__init__", "benchmarks"}
    for path in (PACKAGE / "search").rglob("*.py"):
        reached = {m.split(".")[0] for m in _imports(path)} & edge
        assert not reached, f"{_module_name(path)} imports {reached}"


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an engine module importing the CLI is caught."""
    module = tmp_path / "job.py"
    module.write_text("def f():\n    from satsweep.cli import run\n    return run\n")
    assert _imports(module) == {"cli"}
    assert _layer("cli") > _layer("search.job")


def _public_definitions(path: Path) -> list[ast.FunctionDef | ast.ClassDef]:
    found: list[ast.FunctionDef | ast.ClassDef] = []
    body = ast.parse(path.read_text()).body
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            found.append(node)
            if isinstance(node, ast.ClassDef):
                found += [
                    m
                    for m in node.body
                    if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
                ]
    return found


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_every_public_definition_says_what_it_is_for(path: Path) -> None:
    undocumented = [d.name for d in _public_definitions(path) if not ast.get_docstring(d)]
    assert not undocumented, f"satsweep.{_module_name(path)}: no docstring on {undocumented}"


def test_the_sweep_launcher_imports_no_tensorflow() -> None:
    """It trains nothing: its imports, the best trial's figures among them, stay light."""
    probe = (
        "import sys\nimport satsweep.search.launcher, satsweep.run_figures\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
