"""name words hold deletions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every word longer than three letters, with each letter dropped in turn (`names.deletions`),
# unless the contact already has that spelling: one statement in both dialects.
ADD_DELETIONS = """
WITH RECURSIVE positions(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM positions WHERE i < 300)
INSERT INTO name_words (contact_id, word, exact, words, full_words)
SELECT DISTINCT n.contact_id, substr(n.word, 1, i - 1) || substr(n.word, i + 1), false,
       n.words, n.full_words
FROM name_words n JOIN positions ON i <= length(n.word)
WHERE length(n.word) > 3 AND NOT EXISTS (
    SELECT 1 FROM name_words m
    WHERE m.contact_id = n.contact_id AND m.word = substr(n.word, 1, i - 1) || substr(n.word, i + 1)
)
"""


def upgrade() -> None:
    with op.batch_alter_table("name_words", schema=None) as batch_op:
        batch_op.drop_index("name_words_lookup")
        # The rows so far are the names' own words.
        batch_op.add_column(
            sa.Column("exact", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("name_words", schema=None) as batch_op:
        batch_op.alter_column("exact", server_default=None)
    op.execute(ADD_DELETIONS)
    with op.batch_alter_table("name_words", schema=None) as batch_op:
        batch_op.create_index(
            "name_words_lookup", ["word", "words", "contact_id", "full_words", "exact"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM name_words WHERE NOT exact")
    with op.batch_alter_table("name_words", schema=None) as batch_op:
        batch_op.drop_index("name_words_lookup")
        batch_op.drop_column("exact")
    with op.batch_alter_table("name_words", schema=None) as batch_op:
        batch_op.create_index("name_words_lookup", ["word", "words", "contact_id", "full_words"])
