"""idempotency keys: one per organisation, whatever the endpoint

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 05:00:00

SPEC §8 scopes an ``Idempotency-Key`` to the organisation. The unique index was on
(organization_id, endpoint, key), so the same key could be held on two endpoints at once and
only a look-up before the insert refused the second, which two first uses at one instant
could both pass. The index is now on (organization_id, key): the database decides, and a
key kept under one endpoint answers 422 on another.

Rows that the new index would refuse (one key kept on several endpoints) are thinned to
the newest; they are kept 24 hours at most and a key's rows are only replays.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "uq_idempotency_keys_org_endpoint_key"
NEW = "uq_idempotency_keys_org_key"


def upgrade() -> None:
    op.execute(
        sa.text(
            "DELETE FROM idempotency_keys WHERE id NOT IN ("
            " SELECT MAX(id) FROM idempotency_keys GROUP BY organization_id, key)"
        )
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(OLD)
        batch_op.create_index(NEW, ["organization_id", "key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(NEW)
        batch_op.create_index(OLD, ["organization_id", "endpoint", "key"], unique=True)
