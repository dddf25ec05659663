"""a checkpoint's stamp is milliseconds since 1970: a 64-bit column

``assignments.checkpoint_seq`` holds ``checkpoint_stamp()`` (milliseconds since 1970, about
1.8e12), which a 32-bit INTEGER cannot hold on PostgreSQL: every failover that handed a
checkpoint over, and every reset-checkpoint, failed there with "integer out of range". SQLite
stores any INTEGER in 64 bits, so only PostgreSQL's column changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 14:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.alter_column(
            "checkpoint_seq",
            type_=sa.BigInteger(),
            existing_type=sa.Integer(),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.alter_column(
            "checkpoint_seq",
            type_=sa.Integer(),
            existing_type=sa.BigInteger(),
            existing_nullable=False,
        )
