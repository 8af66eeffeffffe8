"""jobs carry the request id and the trace context of the work that enqueued them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 14:00:00

``request_id`` (the ``X-Request-ID`` of the request whose work the job is, up to 200
characters as careflow echoes them) and ``traceparent`` (a W3C trace context, NULL while
tracing is off) are written in the job's own INSERT and read back by its claim, so the
worker's log lines and spans join the request's. Both nullable: no default, no rewrite of
the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
        batch_op.drop_column("request_id")
