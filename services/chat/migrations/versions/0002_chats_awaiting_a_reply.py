"""chats awaiting a reply

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:11:13.044983
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Open chats start unset: their next customer message announces a wait, and routing, which
    # kept the running waits itself until now, keeps the earlier start.
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("awaiting_reply_since", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("chats", schema=None) as batch_op:
        batch_op.drop_column("awaiting_reply_since")
