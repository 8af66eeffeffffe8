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


async def test_0006_keeps_rules_executions_and_stops_sqlite_reusing_ids(tmp_path: Any) -> None:
    """Upgrading copies automation_rules into an AUTOINCREMENT table without losing the
    executions' links to their rules, and a deleted newest rule's id is not issued again."""
    from alembic import command
    from sqlalchemy import text

    from careflow.db import create_engine
    from careflow.migrate import alembic_config

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}")

    def upgrade(connection: Connection, to: str) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, to)

    rule = (
        "INSERT INTO automation_rules (organization_id, name, enabled, trigger_event,"
        " trigger_config, conditions, actions, version, created_at, updated_at)"
        " VALUES (1, :name, 1, 'patient.onboarded', '{}', '{}', '[]', 1,"
        " '2026-12-01 00:00:00', '2026-12-01 00:00:00')"
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "0005")
            for name in ("one", "two", "three"):
                await conn.execute(text(rule), {"name": name})
            await conn.execute(
                text(
                    "INSERT INTO executions (organization_id, automation_rule_id,"
                    " automation_rule_name, rule_version, trigger_event, trigger_entity_type,"
                    " trigger_entity_id, occurrence_key, status, actions, context, executed_at)"
                    " VALUES (1, 3, 'three', 1, 'patient.onboarded', 'patient', '100',"
                    " 'event:1:patient.onboarded', 'success', '[]', '{}',"
                    " '2026-12-01 00:00:00')"
                )
            )
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "head")
            linked = await conn.scalar(text("SELECT automation_rule_id FROM executions"))
            assert linked == 3
            names = (await conn.execute(text("SELECT id, name FROM automation_rules"))).all()
            assert [tuple(row) for row in names] == [(1, "one"), (2, "two"), (3, "three")]
            await conn.execute(text("DELETE FROM automation_rules WHERE id = 3"))
            await conn.execute(text(rule), {"name": "four"})
            newest = await conn.scalar(text("SELECT max(id) FROM automation_rules"))
            assert newest == 4
    finally:
        await engine.dispose()


async def test_0009_keeps_sms_already_sent_under_the_hourly_cap(tmp_path: Any) -> None:
    """An SMS handed to Twilio before 0009 keeps counting against the hourly cap (its
    ``queued_at`` is its ``sent_at``); downgrading puts delivery statuses back to ``sent``."""
    from alembic import command
    from sqlalchemy import text

    from careflow.db import create_engine
    from careflow.migrate import alembic_config

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'sms.db'}")

    def migrate(connection: Connection, to: str, *, down: bool = False) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(cfg, to)

    message = (
        "INSERT INTO messages (id, organization_id, channel, recipient, template, body, status,"
        " provider, provider_message_id, attempts, created_at, sent_at)"
        " VALUES (:id, 1, :channel, '+447700900123', 'welcome_patient', 'Hi', :status,"
        " 'twilio', :sid, 1, '2026-12-01 00:00:00', :sent_at)"
    )
    rows = [
        {
            "id": "sms_1",
            "channel": "sms",
            "status": "sent",
            "sid": "SM1",
            "sent_at": "2026-12-01 00:00:00",
        },
        {"id": "sms_2", "channel": "sms", "status": "failed", "sid": None, "sent_at": None},
        {
            "id": "msg_3",
            "channel": "email",
            "status": "sent",
            "sid": "<m@x>",
            "sent_at": "2026-12-01 00:00:00",
        },
    ]
    select_steps = text("SELECT id, status, queued_at IS NOT NULL FROM messages ORDER BY id")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "0006")
            for row in rows:
                await conn.execute(text(message), row)
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "0009")
            steps = [tuple(r) for r in (await conn.execute(select_steps)).all()]
            assert steps == [("msg_3", "sent", 0), ("sms_1", "sent", 1), ("sms_2", "failed", 0)]
            await conn.execute(text("UPDATE messages SET status = 'delivered' WHERE id = 'sms_1'"))
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "-1", down=True)
            statuses = (
                await conn.execute(text("SELECT id, status FROM messages ORDER BY id"))
            ).all()
            assert [tuple(r) for r in statuses] == [
                ("msg_3", "sent"),
                ("sms_1", "sent"),
                ("sms_2", "failed"),
            ]
    finally:
        await engine.dispose()


async def test_each_database_draws_its_own_installation_identity(tmp_path: Any) -> None:
    """Two deployments never share the id their Message-IDs carry, nor a signing key."""
    from sqlalchemy import text

    from careflow.db import create_engine
    from careflow.migrate import upgrade_head

    identities = []
    for name in ("one", "two"):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        try:
            await upgrade_head(engine)
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text("SELECT id, installation_id, signing_key FROM installation")
                    )
                ).all()
        finally:
            await engine.dispose()
        [(row_id, installation_id, signing_key)] = rows
        assert row_id == 1 and len(installation_id) == 16 and len(signing_key) >= 32
        identities.append((installation_id, signing_key))
    (first_id, first_key), (second_id, second_key) = identities
    assert first_id != second_id and first_key != second_key
