"""SMS delivery status from the provider, and the organisation's default phone region

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-07 14:00:00

A message now records each step its provider reports: ``queued_at`` (the provider accepted
it), ``sent_at``, ``delivered_at``, ``failed_at`` (undelivered or failed) and the provider's
``error_code``. SMS already handed to the provider keep counting against the hourly cap:
their ``queued_at`` is the ``sent_at`` they had. ``organization_settings.default_region``
is the region numbers without a country code are read in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careflow.db

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STEPS = ("queued_at", "delivered_at", "failed_at")


def upgrade() -> None:
    for name in STEPS:
        op.add_column(
            "messages", sa.Column(name, careflow.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.add_column("messages", sa.Column("error_code", sa.String(length=16), nullable=True))
    op.execute(
        sa.text(
            "UPDATE messages SET queued_at = sent_at"
            " WHERE channel = 'sms' AND provider_message_id IS NOT NULL"
        )
    )
    op.create_index("ix_messages_provider_message_id", "messages", ["provider_message_id"])
    op.add_column(
        "organization_settings", sa.Column("default_region", sa.String(length=2), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("organization_settings", schema=None) as batch_op:
        batch_op.drop_column("default_region")
    # The provider's later steps have no column before this revision: such an SMS goes back
    # to ``sent``, the status it had then.
    op.execute(
        sa.text(
            "UPDATE messages SET status = 'sent', sent_at = COALESCE(sent_at, queued_at)"
            " WHERE channel = 'sms' AND provider_message_id IS NOT NULL"
        )
    )
    op.drop_index("ix_messages_provider_message_id", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("error_code")
        for name in reversed(STEPS):
            batch_op.drop_column(name)
