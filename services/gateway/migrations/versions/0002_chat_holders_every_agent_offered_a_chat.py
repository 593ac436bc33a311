"""chat holders: every agent offered a chat

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:10:03.101320
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _holders_keyed_by(name: str, *key: str) -> None:
    """Rebuild chat_holders with this primary key, keeping its rows (one per key)."""
    op.create_table(
        name,
        sa.Column('chat_id', sa.String(length=36), nullable=False),
        sa.Column('agent_id', sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )
    op.execute(
        f"INSERT INTO {name} (chat_id, agent_id) SELECT chat_id, MIN(agent_id) "
        f"FROM chat_holders GROUP BY {', '.join(key)}"
        if key == ('chat_id',)
        else f"INSERT INTO {name} (chat_id, agent_id) SELECT chat_id, agent_id FROM chat_holders"
    )
    op.drop_table('chat_holders')
    op.rename_table(name, 'chat_holders')


def upgrade() -> None:
    # Under the "everyone" rule a chat is offered to several agents at once.
    _holders_keyed_by('chat_holders_new', 'chat_id', 'agent_id')


def downgrade() -> None:
    _holders_keyed_by('chat_holders_old', 'chat_id')
