"""the fair claim's index ends with the job's id: jobs due at the same time go in the order made

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 20:00:00

A claim takes an organisation's due jobs of one priority ``ORDER BY run_at, id``
(``jobs.claim``): jobs written in one transaction share their run_at, and without the id
they were taken in the order of their rows on disk, which a deleted row's reused space
changes. ``ix_jobs_queued_organization`` gains ``id`` as its last column, so that order is
still one index range read up to the share, however many jobs share a run_at.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued'")


def _index(columns: list[str]) -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_queued_organization", postgresql_where=QUEUED, sqlite_where=QUEUED
        )
        batch_op.create_index(
            "ix_jobs_queued_organization",
            columns,
            unique=False,
            postgresql_where=QUEUED,
            sqlite_where=QUEUED,
        )


def upgrade() -> None:
    _index(["organization_id", "priority", "run_at", "id"])


def downgrade() -> None:
    _index(["organization_id", "priority", "run_at"])
