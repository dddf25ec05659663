"""users, their tokens, the audit trail, and who made what

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 11:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "user_tokens",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user"], ["users.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_user_tokens_user"), "user_tokens", ["user"], unique=False)
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("via", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("object", sa.String(length=200), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_time", "audit", ["time"], unique=False)
    op.create_index(op.f("ix_audit_user"), "audit", ["user"], unique=False)
    op.create_index(op.f("ix_audit_object"), "audit", ["object"], unique=False)
    with op.batch_alter_table("pipe_versions") as b:
        b.add_column(sa.Column("author", sa.String(length=200), nullable=True))
    with op.batch_alter_table("deployments") as b:
        b.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))
        b.add_column(sa.Column("updated_by", sa.String(length=200), nullable=True))
    with op.batch_alter_table("commands") as b:
        b.add_column(sa.Column("issuer", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("commands") as b:
        b.drop_column("issuer")
    with op.batch_alter_table("deployments") as b:
        b.drop_column("updated_by")
        b.drop_column("created_by")
    with op.batch_alter_table("pipe_versions") as b:
        b.drop_column("author")
    op.drop_index(op.f("ix_audit_object"), table_name="audit")
    op.drop_index(op.f("ix_audit_user"), table_name="audit")
    op.drop_index("ix_audit_time", table_name="audit")
    op.drop_table("audit")
    op.drop_index(op.f("ix_user_tokens_user"), table_name="user_tokens")
    op.drop_table("user_tokens")
    op.drop_table("users")
