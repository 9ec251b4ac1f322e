"""Run Alembic from code, so `tuneforge migrate`, `tuneforge up` and the tests share one path.

The migration scripts ship inside the `tuneforge.app.db.migrations` package, so this works from an installed wheel
(the Docker image) as well as from a checkout; `alembic.ini` at the repository root is only for
developers who run the `alembic` command by hand.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from tuneforge.app.db import migrations


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).resolve().parent))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
