"""The training methods as plug-ins: every method a spec can name has one, `method_for` picks it, and
the engine's modules import one another in one direction only (no cycle hidden behind a function-level
import, as data.py and the preference code once had)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import get_args

import pytest

from tests.helpers import ROOT, make_spec
from tuneforge.contract.spec import MethodName
from tuneforge.worker.training.methods import METHODS, TrainingMethod, method_for
from tuneforge.worker.training.methods.dpo import DpoTraining
from tuneforge.worker.training.methods.supervised import SupervisedTraining

ENGINE = ROOT / "tuneforge" / "worker" / "training"
DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5}}}


def test_every_method_a_spec_can_name_has_a_plug_in() -> None:
    assert set(METHODS) == set(get_args(MethodName))
    assert all(issubclass(cls, TrainingMethod) and cls.name == name for name, cls in METHODS.items())


@pytest.mark.parametrize(("method", "expected"), [(None, SupervisedTraining), (DPO, DpoTraining)])
def test_method_for_picks_the_specs_method(method: dict[str, object] | None, expected: type) -> None:
    spec = make_spec(method=method) if method else make_spec()
    picked = method_for(spec)
    assert type(picked) is expected and picked.spec is spec


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _engine_imports(path: Path) -> tuple[set[str], list[str]]:
    """The engine modules `path` imports at module level, and those it imports inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(n) for n in tree.body}
    prefix = "tuneforge.worker.training"
    found: set[str] = set()
    nested: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            names = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names = {a.name for a in node.names if a.name.startswith(prefix)}
        else:
            continue
        if id(node) in top_level:
            found |= names
        elif names:
            nested.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found, nested


def test_the_engine_imports_its_modules_at_the_top_and_without_cycles() -> None:
    modules = {_module(p): p for p in sorted(ENGINE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    lazy: list[str] = []
    for name, path in modules.items():
        imported, nested = _engine_imports(path)
        graph[name] = {m for m in imported if m in modules and m != name}
        lazy += nested
    assert not lazy, f"engine modules imported inside a function: {lazy}"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"the engine's modules import one another in a cycle: {exc.args[1]}")
