"""jobs carry a priority, and an index the fair claim walks organisation by organisation

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 16:00:00

``priority`` (0 urgent, 1 normal, 2 bulk; ``jobs.registry.Priority``) orders an
organisation's due jobs before run_at. Existing jobs are normal (the server default, so
PostgreSQL adds the column without rewriting the table). ``ix_jobs_queued_organization``
(organization_id, priority, run_at) over queued jobs lets the claim find the organisations
with queued work one index probe each and take each one's due jobs of one priority in
run_at order (``jobs.claim``). It replaces ``ix_jobs_queued_run_at`` (run_at alone), which
no query needs any more and which PostgreSQL would pick for an organisation's jobs of one
priority in run_at order, reading past every other organisation's due jobs to find them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.SmallInteger(), server_default=sa.text("1"), nullable=False)
        )
        batch_op.create_index(
            "ix_jobs_queued_organization",
            ["organization_id", "priority", "run_at"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )
        batch_op.drop_index(
            "ix_jobs_queued_run_at",
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_queued_run_at",
            ["run_at"],
            unique=False,
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )
        batch_op.drop_index(
            "ix_jobs_queued_organization",
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
        )
        batch_op.drop_column("priority")
