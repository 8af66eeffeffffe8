"""open-episode lookup: one index probe, whatever the statistics say

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:40:00

``find_open_episode`` filters on (organization_id, patient_id, journey_type, status) and
takes the newest by (created_at, id). With those two columns in the index as well, the
newest open episode is the first entry of one index range. Without them, and with
statistics that call the table empty, PostgreSQL walked the organisation's episodes in
``created_at`` order instead.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_episodes_org_patient_journey"
BEFORE = ["organization_id", "patient_id", "journey_type", "status"]
AFTER = [*BEFORE, "created_at", "id"]


def upgrade() -> None:
    with op.batch_alter_table("episodes", schema=None) as batch_op:
        batch_op.drop_index(NAME)
        batch_op.create_index(NAME, AFTER, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("episodes", schema=None) as batch_op:
        batch_op.drop_index(NAME)
        batch_op.create_index(NAME, BEFORE, unique=False)
