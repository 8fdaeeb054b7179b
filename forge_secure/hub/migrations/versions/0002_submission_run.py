"""The training run of each submission's DP record (its randomness commitment), so the ledger
counts a run once and finds an earlier record of the same run with an index lookup.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:  # batch: SQLite alters by copying the table
        batch.add_column(sa.Column("dp_run", sa.String(64), nullable=True))
    op.create_index("ix_submissions_site_run", "submissions", ["site", "dp_run"])


def downgrade() -> None:
    op.drop_index("ix_submissions_site_run", "submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("dp_run")
