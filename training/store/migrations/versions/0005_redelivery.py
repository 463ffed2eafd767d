"""missed webhook deliveries asked for again: each request is recorded, so that replicas ask once
between them, and each job remembers the webhook that sent it (a token user's repository and
organization webhooks are listed by id)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import training.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redelivery_requests",
        sa.Column("delivery_id", sa.String(length=100), nullable=False),
        sa.Column("requested_at", training.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    op.create_index("ix_redelivery_requests_requested_at", "redelivery_requests", ["requested_at"])
    # Jobs accepted before this revision keep NULL: their webhook is not known.
    op.add_column("webhook_jobs", sa.Column("hook_id", sa.BigInteger(), nullable=True))
    op.add_column("webhook_jobs", sa.Column("hook_target", sa.String(length=20), nullable=True))
    op.create_index("ix_webhook_jobs_hook", "webhook_jobs", ["hook_target", "hook_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_jobs_hook", table_name="webhook_jobs")
    with op.batch_alter_table("webhook_jobs") as batch:
        batch.drop_column("hook_target")
        batch.drop_column("hook_id")
    op.drop_index("ix_redelivery_requests_requested_at", table_name="redelivery_requests")
    op.drop_table("redelivery_requests")
