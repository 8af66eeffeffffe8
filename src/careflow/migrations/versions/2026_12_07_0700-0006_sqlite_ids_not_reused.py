"""SQLite: a deleted automation rule's or template's id is never handed out again

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 07:00:00

Without ``AUTOINCREMENT`` SQLite gives a new row the highest id in the table plus one, so
deleting the newest rule let the next rule take its id: a client holding the old id reached
the new rule, the audit log showed two rules under one object id, and an idempotent replay
of the old create named the new rule. ``AUTOINCREMENT`` keeps the highest id ever issued
(``sqlite_sequence``). PostgreSQL's sequences never reuse an id; nothing changes there.

SQLite cannot add ``AUTOINCREMENT`` to a table, so both are copied into new ones. The old
``automation_rules`` is dropped on the way, and with foreign keys on, that sets every
execution's ``automation_rule_id`` to null (``ON DELETE SET NULL``): those links are kept
aside and put back.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("automation_rules", "templates")


def _recreate(autoincrement: bool) -> None:
    op.execute(
        sa.text(
            "CREATE TEMP TABLE careflow_rule_links AS SELECT id, automation_rule_id"
            " FROM executions WHERE automation_rule_id IS NOT NULL"
        )
    )
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
    op.execute(
        sa.text(
            "UPDATE executions SET automation_rule_id = (SELECT l.automation_rule_id"
            " FROM careflow_rule_links AS l WHERE l.id = executions.id)"
            " WHERE id IN (SELECT id FROM careflow_rule_links)"
        )
    )
    op.execute(sa.text("DROP TABLE careflow_rule_links"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _recreate(autoincrement=False)
