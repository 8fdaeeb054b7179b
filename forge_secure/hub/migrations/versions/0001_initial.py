"""The hub's first schema: the log, rosters, submissions, budgets, nonces, blobs, releases, TUF files.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("hub_meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "log_head", sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), sa.Column("size", sa.Integer, nullable=False)
    )
    op.create_table(
        "log_entries",
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rosters",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("consortium", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("log_index", sa.Integer, nullable=False),
    )
    op.create_table(
        "submissions",
        sa.Column("submission_id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("signer", sa.String(64), nullable=False),
        sa.Column("created", sa.String(32), nullable=False),
        sa.Column("accepted", sa.BigInteger, nullable=False),
        sa.Column("log_index", sa.Integer, nullable=False, unique=True),
        sa.Column("dp", sa.Text, nullable=False),
        sa.Column("epsilon", sa.Float, nullable=True),
        sa.UniqueConstraint("site", "sequence", name="uq_submissions_site_sequence"),
    )
    op.create_index("ix_submissions_site", "submissions", ["site"])
    op.create_table(
        "budgets",
        sa.Column("site", sa.String(64), primary_key=True),
        sa.Column("epsilon", sa.Float, nullable=False),
        sa.Column("log_index", sa.Integer, nullable=False),
    )
    op.create_table(
        "nonces",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("issued", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("uploaded", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "releases",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("log_index", sa.Integer, nullable=False),
        sa.Column("created", sa.BigInteger, nullable=False),
    )
    op.create_table("tuf_files", sa.Column("name", sa.String(128), primary_key=True), sa.Column("body", sa.LargeBinary, nullable=False))


def downgrade() -> None:
    for t in ("tuf_files", "releases", "blobs", "nonces", "budgets", "submissions", "rosters", "log_entries", "log_head", "hub_meta"):
        op.drop_table(t)
