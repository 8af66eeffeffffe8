"""audit entries hold any request id careflow echoes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 06:00:00

``X-Request-ID`` is echoed (and recorded on audit entries) up to 200 characters, so trace
headers such as AWS's ``Root=…;Parent=…;Sampled=1`` come back as sent. The column was 64
characters: on PostgreSQL a longer id made every audited write fail.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "request_id",
            existing_type=sa.String(length=64),
            type_=sa.String(length=200),
            existing_nullable=True,
        )


def downgrade() -> None:
    # Ids longer than 64 characters are cut, not lost with their entries.
    op.execute(sa.text("UPDATE audit_log SET request_id = substr(request_id, 1, 64)"))
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "request_id",
            existing_type=sa.String(length=200),
            type_=sa.String(length=64),
            existing_nullable=True,
        )
