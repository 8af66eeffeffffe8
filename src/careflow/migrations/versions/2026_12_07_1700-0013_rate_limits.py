"""rate limits: token buckets every worker shares, and an organisation's actions a second

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 17:00:00

``rate_limit_buckets`` holds one token bucket a row (``ratelimits/``): an organisation's,
an SMS sending number's, an SMTP relay's. ``organization_settings.actions_per_second`` is
an organisation's limit (``/v1/organization/settings``); null is none.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_buckets",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_buckets")),
    )
    with op.batch_alter_table("organization_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actions_per_second", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organization_settings", schema=None) as batch_op:
        batch_op.drop_column("actions_per_second")
    op.drop_table("rate_limit_buckets")
