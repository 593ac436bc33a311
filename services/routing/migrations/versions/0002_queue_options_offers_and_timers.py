"""queue options, offers and timers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:08:23.022238
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "offers",
        sa.Column("chat_id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("queue_id", sa.String(length=36), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["assignments.chat_id"],
        ),
        sa.PrimaryKeyConstraint("chat_id", "agent_id"),
    )
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offers_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_offers_expires_at"), ["expires_at"], unique=False)

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("console_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_agents_console_seen_at"), ["console_seen_at"], unique=False
        )

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("passed_over_agent_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column("awaiting_reply_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("reply_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("complete_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("wait_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_assignments_complete_due_at"), ["complete_due_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_assignments_reply_due_at"), ["reply_due_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_assignments_wait_due_at"), ["wait_due_at"], unique=False
        )

    with op.batch_alter_table("queues", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "routing_rule", sa.String(length=20), nullable=False, server_default="least_busy"
            )
        )
        batch_op.add_column(
            sa.Column("reoffer_overdue", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("auto_complete_after_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_wait_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("on_max_wait", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("overflow_queue_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("last_offered_agent_id", sa.String(length=36), nullable=True))

    # Offers made before this revision: one row each, lapsing at once (so they move on at the
    # clock's first tick), and `agent_id` now means the owner only.
    op.execute(
        "INSERT INTO offers (chat_id, agent_id, queue_id, offered_at, expires_at) "
        "SELECT chat_id, agent_id, queue_id, offered_at, offered_at FROM assignments "
        "WHERE state = 'offered' AND agent_id IS NOT NULL"
    )
    op.execute("UPDATE assignments SET agent_id = NULL WHERE state = 'offered'")


def downgrade() -> None:
    with op.batch_alter_table("queues", schema=None) as batch_op:
        batch_op.drop_column("last_offered_agent_id")
        batch_op.drop_column("overflow_queue_id")
        batch_op.drop_column("on_max_wait")
        batch_op.drop_column("max_wait_s")
        batch_op.drop_column("auto_complete_after_s")
        batch_op.drop_column("reoffer_overdue")
        batch_op.drop_column("routing_rule")

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assignments_wait_due_at"))
        batch_op.drop_index(batch_op.f("ix_assignments_reply_due_at"))
        batch_op.drop_index(batch_op.f("ix_assignments_complete_due_at"))
        batch_op.drop_column("wait_due_at")
        batch_op.drop_column("complete_due_at")
        batch_op.drop_column("reply_due_at")
        batch_op.drop_column("awaiting_reply_since")
        batch_op.drop_column("passed_over_agent_id")

    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_console_seen_at"))
        batch_op.drop_column("disconnected_at")
        batch_op.drop_column("console_seen_at")

    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offers_expires_at"))
        batch_op.drop_index(batch_op.f("ix_offers_agent_id"))

    op.drop_table("offers")
