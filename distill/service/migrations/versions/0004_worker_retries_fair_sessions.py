"""Dead workers retried, fair scheduling, sessions bound to tokens: a job counts its workers that died
and stamps when it last started (the executor serves the tenant it served least recently first); a
browser session remembers the API token it was made from, so revoking the token ends it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("worker_deaths", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("web_sessions", sa.Column("token_id", sa.String(40), nullable=True))
    op.create_index("ix_web_sessions_token_id", "web_sessions", ["token_id"])
    # Sessions from before this revision name no token, so revoking could not reach them: they end now.
    op.execute(sa.text("UPDATE web_sessions SET ended_at = CURRENT_TIMESTAMP WHERE ended_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_web_sessions_token_id", "web_sessions")
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("token_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("started_at")
        batch.drop_column("worker_deaths")
