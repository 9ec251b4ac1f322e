"""No module of Tuneforge outside the engine's method plug-ins branches on a training method's name.

Supervised training and DPO differ through `TrainingMethod` objects (tuneforge/worker/training/methods/),
picked once by `method_for(spec)`. The contract and the API read what differs from tables keyed by the
name (`METHOD_RULES` in tuneforge/contract/spec/method.py; the hyperparameters OpenAI shows, in
tuneforge/app/jobs/request.py). A branch anywhere else (`spec.method == "dpo"`, `match spec.method`,
`"rejected_ids" in batch`) is one more place the next method would have to find; this test finds it first.

What counts as a branch on the method, in a comparison (==, !=, in, not in, is, is not) or a `match`:
- a method's name as a literal;
- `<x>.method` or `<x>.method.type`, unless compared with None (`body.method is None` asks whether a
  request named a method at all, not which);
- a method's own request block, `<x>.dpo`, even against None (which block was given says which method);
- a key that only one method's examples have, tested for membership (sniffing a batch for its method).
"""

from __future__ import annotations

import ast
from typing import get_args

import pytest

from tests.helpers import ROOT
from tuneforge.contract.spec import MethodName

PKG = ROOT / "tuneforge"
PLUG_INS = PKG / "worker" / "training" / "methods"
METHODS = frozenset(get_args(MethodName))
# Keys of one method's examples (methods/dpo.py's pairs); the engine's shared key is `input_ids`.
METHOD_ONLY_KEYS = frozenset({"rejected_ids", "rejected_labels"})
# Modules allowed to branch on the method anyway, each with its reason. Keep it empty: a table or a
# method object (methods/base.py) does what a branch would.
ALLOWED: dict[str, str] = {}


def _names_a_method(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in METHODS
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_method(e) for e in node.elts)
    return False


def _reads_the_method(node: ast.expr, none_check: bool) -> bool:
    """`x.method` / `x.method.type` (unless in a None check), or a method's own block `x.dpo`."""
    if not isinstance(node, ast.Attribute):
        return False
    if node.attr in METHODS:
        return True
    method_type = node.attr == "type" and isinstance(node.value, ast.Attribute) and node.value.attr == "method"
    return (node.attr == "method" or method_type) and not none_check


def _branches_on_the_method(node: ast.Compare | ast.Match) -> bool:
    if isinstance(node, ast.Match):
        return _reads_the_method(node.subject, False) or any(
            isinstance(p, ast.MatchValue) and _names_a_method(p.value)
            for case in node.cases
            for p in ast.walk(case.pattern)
        )
    operands = [node.left, *node.comparators]
    none_check = any(isinstance(o, ast.Constant) and o.value is None for o in operands)
    return any(_names_a_method(o) or _reads_the_method(o, none_check) for o in operands) or any(
        isinstance(op, ast.In | ast.NotIn) and isinstance(o, ast.Constant) and o.value in METHOD_ONLY_KEYS
        for op, o in zip(node.ops, operands, strict=False)  # ops[i] tests operands[i]: `"key" in batch`
    )


def branches(source: str, filename: str = "<snippet>") -> list[str]:
    """Where `source` branches on a training method, as `line: code`."""
    lines = source.splitlines()
    return [
        f"{node.lineno}: {lines[node.lineno - 1].strip()}"
        for node in ast.walk(ast.parse(source, filename=filename))
        if isinstance(node, ast.Compare | ast.Match) and _branches_on_the_method(node)
    ]


@pytest.mark.parametrize(
    "code",
    [
        'if spec.method == "dpo": pass',
        'if "supervised" != name: pass',
        'x = kind in ("dpo", "orpo")',
        "if spec.method != other: pass",
        'if body.method.type == "x": pass',
        "if body.method.dpo is not None: pass",
        'if "rejected_ids" in batch[0]: pass',
        "match spec.method:\n    case _: pass",
        'match name:\n    case "dpo": pass',
    ],
)
def test_the_scan_finds_a_branch_on_the_method(code: str) -> None:
    assert branches(code)


@pytest.mark.parametrize(
    "code",
    [
        "if body.method is None: pass",
        "x = METHODS[spec.method](spec)",
        'x = {"type": spec.method}',
        'if spec.task == "causal_lm": pass',
        'if "input_ids" in batch: pass',
    ],
)
def test_the_scan_leaves_other_code_alone(code: str) -> None:
    assert not branches(code)


def test_no_module_outside_the_method_plug_ins_branches_on_the_method() -> None:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_relative_to(PLUG_INS) or rel in ALLOWED:
            continue
        found += [f"{rel}:{where}" for where in branches(path.read_text(), rel)]
    assert not found, (
        "branches on the training method outside methods/ (give the method object or the table a say):\n"
        + "\n".join(found)
    )


def test_the_allow_list_names_existing_modules() -> None:
    assert all((ROOT / rel).is_file() for rel in ALLOWED)
