"""The layering rules of docs/architecture.md, enforced: a forbidden import fails this test.

- `contract/` (the spec, the status vocabulary, the queue) imports none of the web, database or ML
  runtimes, nor either side's code.
- `app/` never imports the worker (its only exception is the CLI, the composition root, which
  starts one).
- `worker/training/` (the engine) imports nothing from `app/`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PKG = ROOT / "tuneforge"
COMPOSITION_ROOT = PKG / "app" / "cli.py"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, wherever in the file (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _qualified(name: str) -> str:
    """Tuneforge's own packages by their full name; third-party ones as they are."""
    return f"tuneforge.{name.replace('/', '.')}" if name.split("/")[0] in OWN else name


OWN = ("app", "worker", "contract", "storage")


def violations(package: str, forbidden: tuple[str, ...], exempt: tuple[Path, ...] = ()) -> list[str]:
    bad = []
    for path in sorted((PKG / package).rglob("*.py")):
        if path in exempt:
            continue
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in map(_qualified, forbidden)):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("contract", ("app", "worker", "fastapi", "starlette", "sqlalchemy", "torch", "transformers", "peft")),
        ("app", ("worker",)),
        ("worker/training", ("app", "celery", "sqlalchemy", "fastapi")),
        ("storage", ("app", "worker", "contract", "fastapi", "starlette", "sqlalchemy", "torch", "celery")),
    ],
)
def test_no_forbidden_imports(package: str, forbidden: tuple[str, ...]) -> None:
    assert violations(package, forbidden, exempt=(COMPOSITION_ROOT,)) == []


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from tuneforge.worker.runner import execute\n    import torch.nn\n")
    assert imported_modules(sample) == {"tuneforge.worker.runner", "torch.nn"}


def test_contract_loads_no_runtime() -> None:
    """Importing the whole contract in a fresh interpreter loads none of the heavy runtimes."""
    code = (
        "import sys, json, tuneforge.contract.spec, tuneforge.contract.status, tuneforge.contract.queue; "
        "heavy = ('fastapi', 'sqlalchemy', 'torch', 'transformers', 'tuneforge.app', 'tuneforge.worker'); "
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# What the worker's runtime may load from the API package: the settings, the domain errors, the
# database and the repositories and outbox through which a job's progress is recorded. No routes, no
# services that answer requests, and no web framework: a worker image needs none of them.
WORKER_RUNTIME = (
    "tuneforge.worker.celery_app",
    "tuneforge.worker.tasks",
    "tuneforge.worker.runner",
    "tuneforge.worker.serving",
    "tuneforge.worker.ddp",
)
WORKER_MAY_IMPORT = {
    "tuneforge.app",
    "tuneforge.app.core",
    "tuneforge.app.core.config",
    "tuneforge.app.core.errors",  # plain exceptions (tuneforge.app.core.http_errors is the API's)
    "tuneforge.app.core.ids",
    "tuneforge.app.core.logging",
    "tuneforge.app.core.loops",  # the loop names TUNEFORGE_DISABLED_LOOPS is checked against
    "tuneforge.app.core.storage",
    "tuneforge.app.db",
    "tuneforge.app.db.engine",
    "tuneforge.app.db.models",
    "tuneforge.app.db.paging",
    "tuneforge.app.db.types",
    "tuneforge.app.files",
    "tuneforge.app.files.parsing",  # the worker reads rows with the upload validator's parser
    "tuneforge.app.files.preference",
    "tuneforge.app.files.prompt",  # parsing accepts reinforcement prompt rows
    "tuneforge.app.files.repository",
    "tuneforge.app.fleet",
    "tuneforge.app.fleet.repository",  # a worker's presence
    "tuneforge.app.inference",
    "tuneforge.app.inference.replies",  # the reply channel of an inference request
    "tuneforge.app.uploads",
    "tuneforge.app.uploads.status",  # the uploads table's status column (db.models)
    "tuneforge.app.jobs",
    "tuneforge.app.jobs.continuation",  # from_checkpoint: the parent's adapter
    "tuneforge.app.jobs.dispatch",
    "tuneforge.app.jobs.lifecycle",  # every status change of a job
    "tuneforge.app.jobs.model_path",
    "tuneforge.app.jobs.repository",
    "tuneforge.app.jobs.results",  # a finishing transition writes the job's results file
    "tuneforge.app.permissions",
    "tuneforge.app.permissions.repository",  # from_checkpoint may name a checkpoint shared with the job's org
    "tuneforge.app.auth",  # the outbox names the organization a webhook belongs to
    "tuneforge.app.auth.cache",
    "tuneforge.app.auth.repository",
    "tuneforge.app.auth.service",
    "tuneforge.app.webhooks",
    "tuneforge.app.webhooks.events",
    "tuneforge.app.webhooks.repository",
    "tuneforge.app.webhooks.service",
    "tuneforge.app.webhooks.signing",
    "tuneforge.app.webhooks.ssrf",
}


def test_worker_runtime_loads_no_web_framework() -> None:
    """A fresh interpreter that imports the worker's runtime loads no FastAPI, Starlette or uvicorn, and
    from the API package only the modules listed above."""
    code = (
        f"import sys, json; import {', '.join(WORKER_RUNTIME)}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn') "
        "or m.startswith('tuneforge.app'))))"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert sorted(m for m in loaded if not m.startswith("tuneforge.")) == []
    assert sorted(loaded - WORKER_MAY_IMPORT) == []
