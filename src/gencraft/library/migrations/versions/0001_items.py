"""The items table.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(512), nullable=False, server_default=""),
        sa.Column("prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("image", sa.LargeBinary, nullable=True),
        sa.Column("media_type", sa.String(64), nullable=False, server_default="text/plain"),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("manifest", sa.JSON, nullable=True),
        sa.Column("guard", sa.JSON, nullable=True),
        sa.Column("rating", sa.Integer, nullable=False, server_default="0"),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("api_key", sa.String(64), nullable=True),
    )
    op.create_index("ix_items_created", "items", ["created"])
    op.create_index("ix_items_kind", "items", ["kind"])
    op.create_index("ix_items_model", "items", ["model"])
    op.create_index("ix_items_rating", "items", ["rating"])


def downgrade() -> None:
    op.drop_table("items")
