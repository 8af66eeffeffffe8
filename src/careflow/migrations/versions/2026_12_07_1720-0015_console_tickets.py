"""the console's one-time sign-in links; executions by patient

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 17:00:00

``console_tickets`` holds the id of each sign-in link ``careflow console-url`` printed that
was used: a link signs in once. ``ix_executions_org_patient`` serves the console's patient
filter on the executions list and a patient's journey as the list's other indexes do (the
organisation, the filter's column, then the list's order).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careflow.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_tickets",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("used_at", careflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_console_tickets")),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_executions_org_patient", ["organization_id", "patient_id", "executed_at", "id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_org_patient")
    op.drop_table("console_tickets")
