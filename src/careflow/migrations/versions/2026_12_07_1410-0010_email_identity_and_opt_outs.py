"""emails mailbox providers trust: the installation's identity, careflow's own opt-outs,
organisation templates' HTML

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:00:00

``installation`` holds one row drawn here, once per database: the id every Message-ID
carries (two deployments never write the same Message-ID) and the key that signs
unsubscribe links. ``patient_opt_outs`` records a patient's opt-out made through careflow
(the one-click unsubscribe link), honoured beside the host's snapshot flag.
``templates.html_body`` is an email template's HTML part.
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import careflow.db
import careflow.kit.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("installation_id", sa.String(length=32), nullable=False),
        sa.Column("signing_key", sa.String(length=128), nullable=False),
        sa.Column("created_at", careflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    op.bulk_insert(
        installation,
        [
            {
                "id": 1,
                "installation_id": secrets.token_hex(8),
                "signing_key": secrets.token_urlsafe(48),
                "created_at": datetime.now(UTC),
            }
        ],
    )
    op.create_table(
        "patient_opt_outs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", careflow.kit.types.EntityId(length=128), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", careflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_opt_outs")),
    )
    with op.batch_alter_table("patient_opt_outs", schema=None) as batch_op:
        batch_op.create_index(
            "uq_patient_opt_outs_org_patient_channel",
            ["organization_id", "patient_id", "channel"],
            unique=True,
        )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("html_body", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_column("html_body")
    with op.batch_alter_table("patient_opt_outs", schema=None) as batch_op:
        batch_op.drop_index("uq_patient_opt_outs_org_patient_channel")
    op.drop_table("patient_opt_outs")
    op.drop_table("installation")
