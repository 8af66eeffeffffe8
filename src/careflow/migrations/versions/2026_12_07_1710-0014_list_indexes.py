"""list indexes and kept counts: each list's first page reads one index range, its total
the kept counts

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 17:00:00

The executions, messages, episodes and audit-log lists filter on the organisation and at
most a few columns, and sort by (time, id) newest first. For the organisation alone and for
each filter the API offers, an index leads with the organisation and the filter's column
and ends with (time, id): the first page is the first entries of one range, read backwards,
and ``meta.total`` counts that range from the index alone (an index-only scan, where the
visibility map allows). ``docs/benchmarks.md`` ("Lists at scale") has the figures with 5
million executions.

Indexes that the new ones extend are replaced (same name, more columns); the audit log's
(type, id) index gives way to one on the object's id and one on its type, each ending with
(created_at, id).

``list_counts`` and ``list_count_deltas`` keep the number of rows per (organisation, list,
UTC day, the list's filter columns): on PostgreSQL, statement triggers on the four tables
write each statement's change into the deltas (``careflow.kit.listcounts`` says why and how
they are read). The upgrade fills ``list_counts`` from the rows already there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ORG = "organization_id"

# (table, index, columns before, columns after); None: the index is new, or dropped.
CHANGES: list[tuple[str, str, list[str] | None, list[str] | None]] = [
    (
        "executions",
        "ix_executions_org_executed",
        [ORG, "executed_at"],
        [ORG, "executed_at", "id"],
    ),
    (
        "executions",
        "ix_executions_org_rule",
        [ORG, "automation_rule_id"],
        [ORG, "automation_rule_id", "executed_at", "id"],
    ),
    ("executions", "ix_executions_org_status", None, [ORG, "status", "executed_at", "id"]),
    ("executions", "ix_executions_org_event", None, [ORG, "trigger_event", "executed_at", "id"]),
    ("messages", "ix_messages_org_created", [ORG, "created_at"], [ORG, "created_at", "id"]),
    ("messages", "ix_messages_org_channel", None, [ORG, "channel", "created_at", "id"]),
    ("messages", "ix_messages_org_status", None, [ORG, "status", "created_at", "id"]),
    ("messages", "ix_messages_org_patient", None, [ORG, "patient_id", "created_at", "id"]),
    ("episodes", "ix_episodes_org_created", [ORG, "created_at"], [ORG, "created_at", "id"]),
    ("episodes", "ix_episodes_org_journey", None, [ORG, "journey_type", "created_at", "id"]),
    ("episodes", "ix_episodes_org_status", None, [ORG, "status", "created_at", "id"]),
    ("episodes", "ix_episodes_org_visibility", None, [ORG, "inbox_visibility", "created_at", "id"]),
    (
        "episodes",
        "ix_episodes_org_assignment",
        None,
        [ORG, "suggested_assignment", "created_at", "id"],
    ),
    (
        "episodes",
        "ix_episodes_org_priority",
        None,
        [ORG, "suggested_priority", "created_at", "id"],
    ),
    ("audit_log", "ix_audit_log_org_created", [ORG, "created_at"], [ORG, "created_at", "id"]),
    ("audit_log", "ix_audit_log_org_object", [ORG, "object_type", "object_id"], None),
    ("audit_log", "ix_audit_log_org_object_id", None, [ORG, "object_id", "created_at", "id"]),
    ("audit_log", "ix_audit_log_org_type", None, [ORG, "object_type", "created_at", "id"]),
    ("audit_log", "ix_audit_log_org_actor", None, [ORG, "actor_sub", "created_at", "id"]),
]


def _apply(before_after: int) -> None:
    tables = dict.fromkeys(table for table, *_ in CHANGES)
    for table in tables:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for t, name, before, after in CHANGES:
                if t != table:
                    continue
                old, new = (before, after) if before_after else (after, before)
                if old is not None:
                    batch_op.drop_index(name)
                if new is not None:
                    batch_op.create_index(name, new, unique=False)


# Each kept list: its table, its UTC day, its key columns k1..k5 as text ('' for none).
KEPT = {
    "executions": (
        "executed_at",
        ["coalesce(automation_rule_id::text, '')", "status", "trigger_event", "''", "''"],
    ),
    "messages": ("created_at", ["channel", "status", "''", "''", "''"]),
    "episodes": (
        "created_at",
        [
            "journey_type",
            "status",
            "inbox_visibility",
            "suggested_assignment",
            "suggested_priority",
        ],
    ),
    "audit_log": ("created_at", ["object_type", "actor_sub", "''", "''", "''"]),
}
KEY_COLUMNS = ["k1", "k2", "k3", "k4", "k5"]


def _key_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("list", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *[sa.Column(k, sa.String(length=200), nullable=False) for k in KEY_COLUMNS],
        sa.Column("n", sa.BigInteger(), nullable=False),
    )


def _grouped(table: str, rows: str, sign: str) -> str:
    """The SELECT of (org, list, day, k1..k5, sign times count) over ``rows``."""
    day, keys = KEPT[table]
    selected = ", ".join(
        [
            "organization_id",
            f"'{table}'",
            f"({day} AT TIME ZONE 'UTC')::date",
            *[f"{expr}" for expr in keys],
        ]
    )
    return f"SELECT {selected}, {sign}count(*) FROM {rows} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"


COLUMNS = "organization_id, list, day, k1, k2, k3, k4, k5, n"


def _trigger_sql(table: str) -> list[str]:
    function = f"careflow_list_counts_{table}"
    changed = (
        f"SELECT organization_id, list, day, k1, k2, k3, k4, k5, sum(n) FROM ("
        f"{_grouped(table, 'new_rows', '')} UNION ALL {_grouped(table, 'old_rows', '-')}"
        f") AS d (organization_id, list, day, k1, k2, k3, k4, k5, n)"
        f" GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(n) <> 0"
    )
    body = f"""
        CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO list_count_deltas ({COLUMNS}) {_grouped(table, "new_rows", "")};
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO list_count_deltas ({COLUMNS}) {_grouped(table, "old_rows", "-")};
            ELSE
                INSERT INTO list_count_deltas ({COLUMNS}) {changed};
            END IF;
            RETURN NULL;
        END $$
    """
    statements = [body]
    for event, referencing in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        if table == "audit_log" and event != "INSERT":
            continue  # append-only: its own trigger refuses UPDATE and DELETE
        statements.append(
            f"CREATE TRIGGER {table}_list_counts_{event.lower()} AFTER {event} ON {table}"
            f" REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    return statements


def _create_counts() -> None:
    op.create_table(
        "list_counts",
        *_key_table("list_counts").columns,
        sa.PrimaryKeyConstraint(
            "organization_id", "list", "day", *KEY_COLUMNS, name=op.f("pk_list_counts")
        ),
    )
    op.create_table(
        "list_count_deltas",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        *_key_table("list_count_deltas").columns,
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_count_deltas")),
    )
    with op.batch_alter_table("list_count_deltas", schema=None) as batch_op:
        batch_op.create_index(
            "ix_list_count_deltas_org_list", ["organization_id", "list"], unique=False
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in KEPT:
        for statement in _trigger_sql(table):
            op.execute(statement)
        op.execute(f"INSERT INTO list_counts ({COLUMNS}) {_grouped(table, table, '')}")


def _drop_counts() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in KEPT:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_list_counts_{event} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS careflow_list_counts_{table}()")
    with op.batch_alter_table("list_count_deltas", schema=None) as batch_op:
        batch_op.drop_index("ix_list_count_deltas_org_list")
    op.drop_table("list_count_deltas")
    op.drop_table("list_counts")


def upgrade() -> None:
    _apply(1)
    _create_counts()


def downgrade() -> None:
    _drop_counts()
    _apply(0)
