"""The package's layers import downward only, with no cycles, and the engine never imports the CLI's libraries.

    siamcli (the package: its lazy notebook facade), api, cli, serve  →  training, export, pairs, cluster, dedupe
        →  index, evaluation  →  models  →  data  →  top-level helpers

Read from the source (every import, lazy ones inside functions too), so a violation fails here
before it becomes a tangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "siamcli"
RANK = {"top": 0, "data": 1, "models": 2, "index": 3, "evaluation": 3, "training": 4, "export": 4, "pairs": 4, "cluster": 4,
        "dedupe": 4, "api": 5, "serve": 5, "cli": 6, "facade": 6, "__main__": 7}
ENGINE = ("data", "models", "index", "evaluation", "training", "export", "pairs", "cluster", "dedupe", "api", "facade", "top")


def _layer(module: str) -> str:
    """'siamcli.index.build' → 'index'; top-level modules (siamcli.atomic, …) → 'top'; the package
    itself (siamcli/__init__.py, whose module __getattr__ imports the notebook API lazily) → 'facade'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    if parts[1] == "__main__":
        return "__main__"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "top"


def _imports() -> dict[str, set[str]]:
    """module → the modules (siamcli.* and third-party top names) it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                # `from siamcli.index import build` imports the module siamcli.index.build
                targets.update(f"{node.module}.{alias.name}" for alias in node.names
                               if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists())
        graph[module] = targets
    return graph


GRAPH = _imports()


def test_every_import_goes_down_a_layer_or_stays_in_its_package():
    upward = []
    for module, targets in GRAPH.items():
        here = _layer(module)
        for target in targets:
            if target.split(".")[0] != "siamcli" or target == "siamcli":
                continue
            there = _layer(target)
            if there != here and RANK[there] >= RANK[here]:
                upward.append(f"{module} ({here}) imports {target} ({there})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles_between_modules():
    # `from siamcli import rundir` or `__version__` names a submodule (counted as siamcli.rundir) or
    # a constant the package defines first, not the facade's lazily imported API: no edge to it.
    internal = {m: {t for t in ts if t in GRAPH and t != m and t != "siamcli"} for m, ts in GRAPH.items()}
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(internal[module]):
            if state.get(target) == "open":
                cycles.append(" → ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(internal):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("library", ["typer", "rich", "click"])
def test_the_engine_never_imports_the_cli_libraries(library):
    offenders = [m for m, ts in GRAPH.items() if _layer(m) in ENGINE and any(t.split(".")[0] == library for t in ts)]
    assert not offenders, offenders


def test_the_checker_sees_a_real_violation():
    """Guard against a checker that finds nothing because it reads nothing."""
    assert _layer("siamcli.index.build") == "index" and _layer("siamcli.atomic") == "top"
    assert "siamcli.models.embed" in GRAPH["siamcli.index.embedder"]
    assert RANK[_layer("siamcli.training.trainer")] > RANK[_layer("siamcli.models.embed")]
