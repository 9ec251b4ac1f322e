"""Migration 0007 (uploads, upload_parts): on a fresh SQLite database it builds exactly the ORM's tables,
and it downgrades and upgrades again. (PostgreSQL: every test session builds its schema with it.)"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tuneforge.app.db.migrate import alembic_config, upgrade
from tuneforge.app.db.models import Base

TABLES = {"uploads", "upload_parts"}


def test_0007_builds_the_orms_upload_tables_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert set(sa.inspect(conn).get_table_names()) >= TABLES
        assert [d for d in diffs if _about_uploads(d)] == []
        command.downgrade(alembic_config(url), "0006")
        with engine.connect() as conn:
            assert not TABLES & set(sa.inspect(conn).get_table_names())
        upgrade(url)
        with engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def _about_uploads(diff: object) -> bool:
    """Whether a compare_metadata entry (a tuple, or a list of them) names one of TABLES: as a table
    name, a table, or the table of a column or an index."""
    if isinstance(diff, list | tuple):
        return any(_about_uploads(part) for part in diff)
    table = getattr(diff, "table", diff)
    return diff in TABLES or getattr(table, "name", None) in TABLES
