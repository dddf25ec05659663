"""deployments have a name a user can repeat (idempotent deploys)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 11:20:00

Existing deployments are named after their id, which is unique; new ones default to their
pipe's name. (Written against 0001; chained after 0002 at merge time.)
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=200), nullable=True))
    op.execute("UPDATE deployments SET name = id")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=200), nullable=False)
        batch_op.create_index(batch_op.f("ix_deployments_name"), ["name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployments_name"))
        batch_op.drop_column("name")
