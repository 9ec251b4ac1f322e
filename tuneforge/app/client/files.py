"""`tuneforge files upload|list`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import IO, Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from tuneforge.app.client import output
from tuneforge.app.client.errors import CliError, ExitCode
from tuneforge.app.client.http import Api
from tuneforge.app.core.schemas import ListResponse
from tuneforge.app.files.schemas import FileObject


class _ProgressReader:
    """A file that advances a progress bar as httpx reads it; httpx still sees its length."""

    def __init__(self, fh: IO[bytes], progress: Progress, task: Any) -> None:
        self.fh, self.progress, self.task = fh, progress, task

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        self.progress.update(self.task, advance=len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        pos = self.fh.seek(offset, whence)
        self.progress.update(self.task, completed=pos)
        return pos

    def tell(self) -> int:
        return self.fh.tell()

    def fileno(self) -> int:
        return self.fh.fileno()


def report(f: FileObject) -> None:
    """The validation report the server recorded: format, rows and what each column holds."""
    output.err.print(
        f"[green]uploaded[/] {f.id}  {output.escape(f.filename)}  {output.human_bytes(f.bytes)}  "
        f"format={f.format}  rows={f.n_rows}  status={f.status}"
    )
    rows = []
    for name, info in f.columns.items():
        info = info if isinstance(info, dict) else {}
        types = info.get("types")
        rows.append(
            [
                name,
                ",".join(types) if isinstance(types, list) else types,
                info.get("non_null", info.get("count")),
                info.get("distinct"),
            ]
        )
    if rows:
        output.table(["column", "types", "non-null", "distinct"], rows, title="columns", console=output.err)


def cmd_upload(api: Api, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise CliError(f"{path}: no such file", ExitCode.USAGE, param="path")
    size = path.stat().st_size
    with (
        path.open("rb") as fh,
        Progress(
            TextColumn("upload {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=output.err,
            transient=True,
            disable=args.json,
        ) as progress,
    ):
        task = progress.add_task(path.name, total=size)
        reader = _ProgressReader(fh, progress, task)
        body = api.post("/v1/files", files={"file": (path.name, reader)}, data={"purpose": args.purpose})
    f = FileObject.model_validate(body)
    if args.json:
        output.print_json(f.model_dump(mode="json"))
    else:
        report(f)
        print(f.id)
    return 0


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    page = ListResponse[FileObject].model_validate(api.get("/v1/files", params={"limit": args.limit}))
    if args.json:
        output.print_json(page.model_dump(mode="json"))
        return 0
    output.table(
        ["id", "filename", "format", "rows", "bytes", "created"],
        [
            [f.id, f.filename, f.format, f.n_rows, output.human_bytes(f.bytes), output.when(f.created_at)]
            for f in page.data
        ],
    )
    if page.has_more:
        output.err.print(f"(more: --limit above {args.limit})")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("files", help="upload and list datasets on a server")
    fs = p.add_subparsers(dest="files_cmd", required=True)
    up = fs.add_parser("upload", parents=[common], help="upload a JSONL/CSV file and show its validation report")
    up.add_argument("path")
    up.add_argument("--purpose", default="fine-tune")
    up.set_defaults(client_func=cmd_upload)
    ls = fs.add_parser("list", parents=[common], help="list uploaded files")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(client_func=cmd_list)
