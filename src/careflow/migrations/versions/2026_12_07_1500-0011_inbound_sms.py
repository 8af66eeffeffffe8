"""inbound SMS: the numbers each organisation receives texts on, and phones that texted STOP

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:00:00

``organization_sms_numbers`` holds each organisation's ``sms_numbers`` setting, one E.164
number a row; the unique index on the number makes a number belong to one organisation,
which is how an inbound text finds its organisation. ``sms_opt_outs`` records a phone (in
E.164) that texted STOP to an organisation: careflow sends that phone no SMS until it texts
START.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import careflow.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organization_sms_numbers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_sms_numbers")),
    )
    with op.batch_alter_table("organization_sms_numbers", schema=None) as batch_op:
        batch_op.create_index("uq_organization_sms_numbers_number", ["number"], unique=True)
        batch_op.create_index("ix_organization_sms_numbers_org", ["organization_id"])
    op.create_table(
        "sms_opt_outs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", careflow.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_opt_outs")),
    )
    with op.batch_alter_table("sms_opt_outs", schema=None) as batch_op:
        batch_op.create_index(
            "uq_sms_opt_outs_org_phone", ["organization_id", "phone"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("sms_opt_outs", schema=None) as batch_op:
        batch_op.drop_index("uq_sms_opt_outs_org_phone")
    op.drop_table("sms_opt_outs")
    with op.batch_alter_table("organization_sms_numbers", schema=None) as batch_op:
        batch_op.drop_index("ix_organization_sms_numbers_org")
        batch_op.drop_index("uq_organization_sms_numbers_number")
    op.drop_table("organization_sms_numbers")
