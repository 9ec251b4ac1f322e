"""One writer of a job's status: tuneforge/app/jobs/lifecycle.py. This test reads every other module
of the package and fails where one assigns or updates `Job.status` (creating a job as `queued` or
`validating_files` is not a change of status, and stays with the job service).

What counts as a write, statically:
- `.values(...)`/`.ordered_values(...)` on `update(Job)`/`insert(Job)` that sets `status` (a keyword,
  a dict key, or a `**` of anything but a plain name);
- `<anything>.status = ...` (an ORM object changed in place) and `setattr(..., "status", ...)`;
- SQL text that updates `jobs` and sets `status`;
- `Job(..., status=...)` with any status but a job's first.
"""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers import ROOT

PKG = ROOT / "tuneforge"
OWNER = PKG / "app" / "jobs" / "lifecycle.py"
CREATED_AS = {"QUEUED", "VALIDATING_FILES", "queued", "validating_files"}
SQL_UPDATE = re.compile(r"\bupdate\s+\"?jobs\"?\s.*\bset\b.*\bstatus\b", re.IGNORECASE | re.DOTALL)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _on_jobs(node: ast.expr) -> bool:
    """Whether a chained statement (`update(Job).where(...).values`) starts from update/insert(Job)."""
    while True:
        if isinstance(node, ast.Call):
            if _name(node.func) in ("update", "insert") and node.args and _name(node.args[0]) == "Job":
                return True
            node = node.func
        elif isinstance(node, ast.Attribute):
            node = node.value
        else:
            return False


def _sets_status(call: ast.Call) -> bool:
    for kw in call.keywords:
        if kw.arg == "status" or (kw.arg is None and not isinstance(kw.value, ast.Name)):
            return True
    for arg in call.args:
        if isinstance(arg, ast.Dict):
            if any(_key_is_status(k) for k in arg.keys if k is not None):
                return True
        elif not isinstance(arg, ast.Name):
            return True  # built elsewhere: cannot be checked here
    return False


def _key_is_status(key: ast.expr) -> bool:
    return (isinstance(key, ast.Constant) and key.value == "status") or _name(key) == "status"


def _first_status(call: ast.Call) -> bool:
    status = next((kw.value for kw in call.keywords if kw.arg == "status"), None)
    if status is None:
        return True
    value = status.value if isinstance(status, ast.Constant) else _name(status)
    return value in CREATED_AS


def _assigns_status(target: ast.expr) -> bool:
    """`x.status = ...`, also inside `a, x.status = ...` (not `counts[x.status] = ...`: a read)."""
    if isinstance(target, ast.Tuple | ast.List):
        return any(_assigns_status(t) for t in target.elts)
    if isinstance(target, ast.Starred):
        return _assigns_status(target.value)
    return isinstance(target, ast.Attribute) and target.attr == "status"


def status_writes(source: str, filename: str = "<source>") -> list[int]:
    """The lines of `source` that write a job's status."""
    lines = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("values", "ordered_values") and _on_jobs(func.value):
                if _sets_status(node):
                    lines.append(node.lineno)
            elif _name(func) == "setattr" and len(node.args) >= 2:
                attr = node.args[1]
                if isinstance(attr, ast.Constant) and attr.value == "status":
                    lines.append(node.lineno)
            elif _name(func) == "Job" and not _first_status(node):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_assigns_status(target) for target in targets):
                lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_UPDATE.search(node.value):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_only_lifecycle_writes_a_jobs_status() -> None:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path == OWNER:
            continue
        found += [f"{path.relative_to(ROOT)}:{line}" for line in status_writes(path.read_text(), str(path))]
    assert found == [], "a job's status changes only through tuneforge/app/jobs/lifecycle.py:\n" + "\n".join(found)


def test_the_scan_sees_lifecycles_own_writes() -> None:
    """Not vacuous: the owner's conditional update is found by the same scan."""
    assert status_writes(OWNER.read_text(), str(OWNER))


@pytest.mark.parametrize(
    "code",
    [
        "session.execute(update(Job).where(Job.id == j).values(status=JobStatus.FAILED))",
        "session.execute(sa.update(Job).values(**_next_attempt(now)))",
        "stmt = update(Job).where(Job.id == j).values({'status': 'failed'})",
        "stmt = update(Job).values({Job.status: 'failed'})",
        "job.status = JobStatus.CANCELLED",
        "rows[0].status: str = 'failed'",
        "job.step, job.status = 3, 'failed'",
        "setattr(job, 'status', 'failed')",
        "session.execute(text('UPDATE jobs SET error = NULL, status = :s WHERE id = :id'))",
        "session.add(Job(id='x', status=JobStatus.RUNNING))",
    ],
)
def test_the_scan_finds_each_kind_of_write(code: str) -> None:
    assert status_writes(code) == [1]


@pytest.mark.parametrize(
    "code",
    [
        "session.execute(update(Job).where(Job.status == JobStatus.QUEUED).values(enqueued_at=None))",
        "session.execute(update(Job).where(Job.id == j).values(lease_expires_at=t, **progress))",
        "session.execute(update(Sweep).where(Sweep.id == s).values(status=SweepStatus.CANCELLED))",
        "session.add(Job(id='x', status=JobStatus.QUEUED))",
        "if job.status == JobStatus.QUEUED: pass",
        "counts[job.status.value] += 1",
        "select(Job).where(Job.status.in_(TRAINING))",
    ],
)
def test_the_scan_leaves_reads_and_other_tables_alone(code: str) -> None:
    assert status_writes(code) == []
