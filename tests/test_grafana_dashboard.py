"""deploy/grafana/tuneforge.json references only series that /metrics really serves."""

from __future__ import annotations

import json
import re

import httpx

from tests.helpers import ROOT, make_key
from tuneforge.app.ops.instruments import observe_inference, record_webhook_failure

DASHBOARD = ROOT / "deploy" / "grafana" / "tuneforge.json"
METRIC = re.compile(r"\b((?:tuneforge|process)_[a-z0-9_]+)\b")
SUFFIXES = {"_bucket": "histogram", "_sum": "histogram", "_count": "histogram", "_total": "counter"}


def expressions(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        if isinstance(node.get("query"), str):
            found.append(node["query"])
        return found + [e for v in node.values() for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def test_every_dashboard_metric_exists(client: httpx.Client) -> None:
    observe_inference(0.1)  # the in-process instruments show samples once used (their TYPE lines always)
    record_webhook_failure("timeout")
    admin = {"Authorization": f"Bearer {make_key('grafana', admin=True)}"}
    text = client.get("/metrics", headers=admin).text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", text, re.M))

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard["panels"]) + expressions(dashboard["templating"])
    referenced = {name for e in exprs for name in METRIC.findall(e)}
    assert len(referenced) >= 8, referenced

    missing = []
    for name in sorted(referenced):
        if name in samples or types.get(name) in ("gauge", "untyped"):
            continue
        family = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), None)
        if family is not None and types.get(family) == SUFFIXES[name[len(family) :]]:
            continue
        missing.append(name)
    assert not missing, f"the dashboard uses series /metrics does not serve: {missing}"
    # Every label the dashboard groups by is on its metric's samples (when it has any yet).
    lines = text.splitlines()
    for e in exprs:
        used = METRIC.findall(e)
        rows = [ln for ln in lines if not ln.startswith("#") and any(ln.startswith(m) for m in used)]
        for group in re.findall(r"by \(([^)]*)\)", e):
            for label in (x.strip() for x in group.split(",")):
                assert label == "le" or not rows or any(f'{label}="' in r for r in rows), (label, e)
