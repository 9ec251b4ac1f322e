"""What `pip install .` puts on a machine, and what it installs from.

- The wheel holds one top-level package, `tuneforge`: names like `app`, `worker` or `migrations` belong
  to other distributions on PyPI, and pip overwrites another distribution's files without a word.
- Everything installs from the lock (constraints.txt, made by scripts/lock.sh): the test command's
  install script, CI (which runs it) and both Docker images.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.helpers import ROOT

LOCK = ROOT / "constraints.txt"


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (`uvicorn[standard]>=0.30` -> uvicorn)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins() -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, rest = line.partition("==")
            pins.setdefault(_name(name), set()).add(rest.split(";")[0].strip())
    return pins


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tuneforge", src / "tuneforge", ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    subprocess.run(cmd, cwd=src, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("tuneforge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"tuneforge"}
    # The files that are not Python travel too: migrations, the dashboard, the demo's data.
    assert any(n.startswith("tuneforge/app/db/migrations/versions/") for n in names)
    assert "tuneforge/app/db/migrations/script.py.mako" in names
    assert "tuneforge/app/static/ui/index.html" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "tuneforge = tuneforge.app.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_lock_pins_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r) for r in project["dependencies"] + extras["dev"] + extras["integrations"]}
    pins = _pins()
    assert sorted(wanted - pins.keys()) == []
    # torch at the version the install script and the images install (CPU and CUDA builds alike).
    torch_default = re.search(
        r"TORCH_VERSION=\$\{TUNEFORGE_TORCH_VERSION:-([0-9.]+)\}", (ROOT / "scripts/install.sh").read_text()
    )
    assert torch_default and pins["torch"] == {torch_default.group(1)}
    assert f"ARG TORCH_VERSION={torch_default.group(1)}" in (ROOT / "Dockerfile").read_text()


def test_every_install_uses_the_lock() -> None:
    install = (ROOT / "scripts/install.sh").read_text()
    assert re.search(r'pip install -q -e "\.\[dev,integrations\]" -c constraints\.txt', install)
    assert "bash scripts/install.sh" in (ROOT / "scripts/test.sh").read_text()  # which .ci/run runs
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("RUN pip install -c constraints.txt . ") == 1  # the API image
    assert dockerfile.count('RUN pip install -c constraints.txt ".[integrations]"') == 1  # the worker's trackers
    assert dockerfile.count("COPY pyproject.toml README.md constraints.txt ./") == 2
