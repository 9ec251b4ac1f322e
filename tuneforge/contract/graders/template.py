"""Grader templates: `{{item.<field>}}` reads the dataset row, `{{sample.output_text}}` the model's
completion and `{{sample.output_json.<key>}}` its parsed JSON (when the job sets a JSON response format).
A reference that does not resolve is an error the grader reports (`invalid_variable_error`)."""

from __future__ import annotations

import json
import re
from typing import Any

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*\}\}")
NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json")


class TemplateError(ValueError):
    pass


def references(template: str) -> list[tuple[str, list[str]]]:
    """(namespace, path) of every variable, e.g. ("item", ["answer"])."""
    return [(m.group(1), [p for p in m.group(2).split(".") if p]) for m in VARIABLE.finditer(template)]


def check_template(template: str) -> None:
    """Refuse an unknown namespace or sample field (a typo would otherwise score every sample 0)."""
    for namespace, path in references(template):
        if namespace not in NAMESPACES:
            raise TemplateError(f"`{{{{{namespace}...}}}}`: variables are item.<field> or sample.output_text")
        if not path:
            raise TemplateError(f"`{{{{{namespace}}}}}` needs a field, e.g. {{{{{namespace}.{SAMPLE_FIELDS[0]}}}}}")
        if namespace == "sample" and path[0] not in SAMPLE_FIELDS:
            raise TemplateError(f"sample.{path[0]} is not a sample field; use {' or '.join(SAMPLE_FIELDS)}")


def _lookup(value: Any, path: list[str], shown: str) -> Any:
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"{shown} does not resolve")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        namespace, path = m.group(1), [p for p in m.group(2).split(".") if p]
        root = {"item": item, "sample": sample}.get(namespace)
        if root is None:
            raise TemplateError(f"unknown variable namespace `{namespace}`")
        return _text(_lookup(root, path, m.group(0)))

    return VARIABLE.sub(one, template)


def item_fields(template: str) -> set[str]:
    """The dataset columns a template reads (the first key of each item path)."""
    return {path[0] for ns, path in references(template) if ns == "item" and path}
