"""The migrated schema is the models' schema: no autogenerate drift on either engine."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.migrate import current_revision, head_revision
from careflow.models import Base

# Scratch tables that some tests create beside careflow's schema.
TEST_TABLES = ("test_", "job_probe")


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (
        type_ == "table" and reflected and name is not None and name.startswith(TEST_TABLES)
    )


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": _ours}
    )
    return list(compare_metadata(context, Base.metadata))


class TestMigrations:
    async def test_database_is_at_head(self, engine: AsyncEngine) -> None:
        assert await current_revision(engine) == head_revision()

    async def test_no_drift_between_models_and_migrations(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
        assert diff == []


async def test_0004_keeps_one_row_per_organisation_key(tmp_path: Any) -> None:
    """Upgrading a database where one key is held on two endpoints keeps the newest row."""
    from alembic import command
    from sqlalchemy import text

    from careflow.db import create_engine
    from careflow.migrate import alembic_config

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'upgrade.db'}")

    def upgrade(connection: Connection, to: str) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, to)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "0003")
            for n, (org, endpoint) in enumerate(
                [(1, "events.ingest"), (1, "pathway-rules.create"), (2, "events.ingest")]
            ):
                await conn.execute(
                    text(
                        "INSERT INTO idempotency_keys (organization_id, endpoint, key,"
                        " fingerprint, status, response_body, created_at, expires_at)"
                        " VALUES (:org, :endpoint, 'k', :fp, 'completed', 'null',"
                        " '2026-12-01 00:00:00', '2026-12-02 00:00:00')"
                    ),
                    {"org": org, "endpoint": endpoint, "fp": str(n)},
                )
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "head")
            rows = (
                await conn.execute(
                    text(
                        "SELECT organization_id, endpoint FROM idempotency_keys"
                        " ORDER BY organization_id"
                    )
                )
            ).all()
        assert [tuple(row) for row in rows] == [
            (1, "pathway-rules.create"),
            (2, "events.ingest"),
        ]
    finally:
        await engine.dispose()
