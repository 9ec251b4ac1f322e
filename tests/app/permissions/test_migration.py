"""Migration 0008 (checkpoint_permissions, jobs.model_deleted_at): on a fresh SQLite database it builds
exactly the ORM's table and column, and it downgrades and upgrades again."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tuneforge.app.db.migrate import alembic_config, upgrade
from tuneforge.app.db.models import Base


def _state(engine: sa.Engine) -> tuple[bool, bool]:
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        has_table = "checkpoint_permissions" in inspector.get_table_names()
        has_column = "model_deleted_at" in {c["name"] for c in inspector.get_columns("jobs")}
    return has_table, has_column


def test_0008_builds_the_orms_permissions_table_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = sa.create_engine(url)
    try:
        assert _state(engine) == (True, True)
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diffs if "checkpoint_permissions" in repr(d) or "model_deleted_at" in repr(d)] == []
        command.downgrade(alembic_config(url), "0007")
        assert _state(engine) == (False, False)
        upgrade(url)
        assert _state(engine) == (True, True)
    finally:
        engine.dispose()
