"""Checks responses against OpenAI's OpenAPI document (tests/fixtures/openai_openapi) and SDK objects
against the official SDK's own types. `Conformance.client()` gives an httpx client whose every response
is checked as it arrives; hand it to `OpenAI(http_client=...)` and every SDK call is checked too (the
SDK's own HTTP library, httpx2, whose API is httpx's).

The document is OpenAPI 3.1 (JSON Schema 2020-12) but still uses two OpenAPI 3.0 keywords, mapped here:
`nullable: true` becomes `anyOf: [<schema>, {type: null}]`, and a boolean `exclusiveMinimum` /
`exclusiveMaximum` becomes 2020-12's number form. Extra fields are fine (the document does not close
its objects); a missing required field, a wrong type or a value outside an enum is a failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pydantic
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT = Path(__file__).parent / "fixtures" / "openai_openapi" / "openapi.json"
BASE = "urn:openai-openapi"
METHODS = ("get", "post", "put", "patch", "delete")
# The one value outside the document's enum that the issue allows: OpenAI's own pause returns
# `paused`, but its FineTuningJob schema (and the SDK's Literal) were never updated.
ALLOWED = {("FineTuningJob", "status"): "paused"}


def to_31(node: Any) -> Any:
    """The document with OpenAPI 3.0's `nullable` and boolean exclusive bounds in 2020-12's terms."""
    if isinstance(node, list):
        return [to_31(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_31(v) for k, v in node.items() if k != "nullable"}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # 3.0: `exclusiveMinimum: true` beside `minimum: m`; 2020-12: `exclusiveMinimum: m`.
        exclusive = out.pop(bound) if isinstance(out.get(bound), bool) else None
        if exclusive and limit in out:
            out[bound] = out.pop(limit)
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def load_document() -> dict[str, Any]:
    doc: dict[str, Any] = to_31(json.loads(DOCUMENT.read_text()))
    for (schema, prop), value in ALLOWED.items():
        enum = doc["components"]["schemas"][schema]["properties"][prop]["enum"]
        enum.append(value)
    return doc


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str]
    responses: dict[str, Any]


@dataclass
class Conformance:
    """Collects what it checked (`seen`: operationId and status) and what failed (`failures`)."""

    doc: dict[str, Any] = field(default_factory=load_document)
    seen: set[tuple[str, int]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    unchecked: set[str] = field(default_factory=set)
    bodies: int = 0

    def __post_init__(self) -> None:
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self.operations = [
            Operation(
                method=method,
                template=path,
                operation_id=op["operationId"],
                pattern=re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"),
                responses=op.get("responses", {}),
            )
            for path, item in self.doc["paths"].items()
            for method, op in item.items()
            if method in METHODS
        ]

    def operation(self, method: str, path: str) -> Operation | None:
        path = path.removeprefix("/v1")
        for op in self.operations:
            if op.method == method.lower() and op.pattern.match(path):
                return op
        return None

    def validator(self, ref: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{BASE}#{ref}"}, registry=self.registry)

    def errors(self, ref: str, body: Any) -> list[str]:
        found = sorted(self.validator(ref).iter_errors(body), key=lambda e: list(e.absolute_path))
        return [f"{e.json_path}: {e.message[:300]}" for e in found]

    def _schema_ref(self, op: Operation, status: int, media: str) -> str | None:
        if status >= 400:
            return "/components/schemas/ErrorResponse"
        response = op.responses.get(str(status)) or op.responses.get("default")
        if response is None:
            return None
        content = response.get("content", {}).get(media)
        if content is None or "$ref" not in content.get("schema", {}):
            return None
        return str(content["schema"]["$ref"]).removeprefix("#")

    def check(self, response: httpx2.Response) -> None:
        """Validates one response (called by the client's response hook)."""
        request = response.request
        op = self.operation(request.method, request.url.path)
        if op is None:
            self.unchecked.add(f"{request.method} {request.url.path}")  # a Tuneforge route
            return
        media = response.headers.get("content-type", "").split(";")[0].strip()
        where = f"{request.method} {request.url.path} -> {response.status_code}"
        if media == "text/event-stream":
            response.read()
            ref = self._schema_ref(op, response.status_code, media)
            for chunk in sse_chunks(response.text):
                self._record(op, response.status_code, where, ref, chunk)
            return
        if media != "application/json":
            self.seen.add((op.operation_id, response.status_code))  # a download: nothing to validate
            return
        response.read()
        ref = self._schema_ref(op, response.status_code, media)
        if ref is None:
            self.failures.append(f"{where}: the document has no JSON response for this status")
            return
        self._record(op, response.status_code, where, ref, response.json())

    def _record(self, op: Operation, status: int, where: str, ref: str | None, body: Any) -> None:
        self.seen.add((op.operation_id, status))
        if ref is None:
            return  # a stream the document does not describe (text completions)
        self.bodies += 1
        self.failures.extend(f"{where} ({ref.rsplit('/', 1)[-1]}) {e}" for e in self.errors(ref, body))

    def client(self, base_url: str, headers: dict[str, str] | None = None) -> httpx2.Client:
        return httpx2.Client(
            base_url=base_url, headers=headers or {}, timeout=120, event_hooks={"response": [self.check]}
        )

    def assert_clean(self) -> None:
        assert not self.failures, "\n".join(self.failures[:40])


def sse_chunks(text: str) -> Iterator[Any]:
    for line in text.splitlines():
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            yield json.loads(line[6:])


def sdk_errors(obj: Any) -> list[str]:
    """Re-reads an object the official SDK returned (which it builds without validating) against its
    own pydantic type, strictly: each field's type, each `Literal`, each required field. A page is
    checked item by item."""
    if hasattr(obj, "has_next_page"):  # a page (SyncPage, SyncCursorPage): its items
        return [e for item in obj.data for e in sdk_errors(item)]
    raw = obj.to_dict(mode="json")
    try:
        type(obj).model_validate_json(json.dumps(raw), strict=True)
    except pydantic.ValidationError as exc:
        problems = [
            f"{type(obj).__name__}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
            if not _allowed(type(obj).__name__, e)
        ]
        return problems
    return []


def _allowed(name: str, error: Any) -> bool:
    loc = tuple(error["loc"])
    return len(loc) == 1 and ALLOWED.get((name, str(loc[0]))) == error.get("input")
