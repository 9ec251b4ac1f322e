"""`multi` graders' `calculate_output`: arithmetic over the sub-graders' scores, parsed with `ast`
and evaluated by walking an allow-listed tree (never `eval`)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


class FormulaError(ValueError):
    pass


def _parse(formula: str) -> ast.expr:
    try:
        return ast.parse(formula, mode="eval").body
    except SyntaxError as exc:
        raise FormulaError(f"calculate_output is not a formula: {exc.msg}") from exc


def _walk(node: ast.expr, names: set[str], values: dict[str, float] | None) -> float:
    """Check (values None) or evaluate the tree."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise FormulaError(f"calculate_output names `{node.id}`, which is not one of the graders: {sorted(names)}")
        return values[node.id] if values is not None else 0.0
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left, names, values), _walk(node.right, names, values)
        return _BINARY[type(node.op)](left, right) if values is not None else 0.0
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        inner = _walk(node.operand, names, values)
        return _UNARY[type(node.op)](inner) if values is not None else 0.0
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if node.keywords or not node.args:
            raise FormulaError(f"{node.func.id}() takes positional arguments only")
        args = [_walk(a, names, values) for a in node.args]
        return float(FUNCTIONS[node.func.id](*args)) if values is not None else 0.0
    raise FormulaError(f"calculate_output may not contain `{ast.unparse(node)}`")


def check_formula(formula: str, names: set[str]) -> None:
    _walk(_parse(formula), names, None)


def evaluate_formula(formula: str, values: dict[str, float]) -> float:
    """The formula's value; FormulaError on arithmetic errors (division by zero, log of 0)."""
    try:
        return float(_walk(_parse(formula), set(values), values))
    except (ArithmeticError, ValueError) as exc:
        if isinstance(exc, FormulaError):
            raise
        raise FormulaError(f"calculate_output failed: {exc}") from exc
