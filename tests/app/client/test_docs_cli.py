"""Every `tuneforge` command shown in docs/cli.md and the README parses with the real parser, and
the client's local pieces behave as documented (config precedence, --set values, sparklines)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tuneforge.app.cli import build_parser
from tuneforge.app.client.config import resolve
from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.client.output import sparkline
from tuneforge.app.client.spec_input import apply_set, build_body

CLIENT_GROUPS = ("files", "jobs", "chat")


def shown_commands(path: Path) -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["tuneforge"] and argv[1:2] and argv[1] in CLIENT_GROUPS:
                commands.append(argv[1:])
    return commands


@pytest.mark.parametrize("doc", ["docs/cli.md", "README.md"])
def test_documented_commands_parse(doc: str) -> None:
    commands = shown_commands(ROOT / doc)
    assert commands
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert callable(args.client_func), argv


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[default]\napi_url = "http://file:1/v1"\napi_key = "k-file"\n[prod]\napi_url = "http://prod:2"\n'
    )
    monkeypatch.setenv("TUNEFORGE_CONFIG", str(config))
    for name in ("TUNEFORGE_API_URL", "TUNEFORGE_API_KEY", "TUNEFORGE_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    c = resolve(api_url=None, api_key=None, profile=None)
    assert (c.api_url, c.api_key) == ("http://file:1", "k-file")  # /v1 dropped
    monkeypatch.setenv("TUNEFORGE_API_URL", "http://env:3/")
    assert resolve(api_url=None, api_key=None, profile=None).api_url == "http://env:3"
    assert resolve(api_url=None, api_key=None, profile="prod").api_url == "http://prod:2"  # explicit beats env
    assert resolve(api_url="http://flag:4", api_key="k", profile="prod").api_url == "http://flag:4"
    with pytest.raises(CliError) as exc:
        resolve(api_url=None, api_key=None, profile="staging")
    assert exc.value.code == ExitCode.USAGE


def test_set_values_and_local_validation(tmp_path: Path) -> None:
    body: dict[str, object] = {}
    apply_set(body, "training.learning_rate=1e-4")
    apply_set(body, 'lora.target_modules=["q_proj"]')
    apply_set(body, "suffix=run-1")
    assert body == {"training": {"learning_rate": 1e-4}, "lora": {"target_modules": ["q_proj"]}, "suffix": "run-1"}
    spec = tmp_path / "spec.json"
    spec.write_text('{"training": {"max_steps": 10, "epochs": 2}}')
    with pytest.raises(CliError) as exc:
        build_body(model="m", training_file="f", spec=str(spec), sets=[])
    assert exc.value.code == ExitCode.USAGE and "training" in exc.value.message
    ok = build_body(model="m", training_file="f", spec=str(spec), sets=["training.epochs=null"], seed=1)
    assert ok["training"] == {"max_steps": 10, "epochs": None} and ok["seed"] == 1


def test_sparkline() -> None:
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    line = sparkline([float(i) for i in range(500)], width=40)
    assert len(line) == 40 and line[0] == "▁" and line[-1] == "█"
    assert sparkline([]) == "" and sparkline([float("nan"), 1.0]) == "▁"
