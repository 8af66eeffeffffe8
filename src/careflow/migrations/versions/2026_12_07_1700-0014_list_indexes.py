"""list indexes: each list's first page and its count read one index range

Revision ID: 0014
Revises: 0011
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
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
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


def upgrade() -> None:
    _apply(1)


def downgrade() -> None:
    _apply(0)
