"""failed webhook deliveries asked for again are recorded, so that replicas ask once between them

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


def downgrade() -> None:
    op.drop_index("ix_redelivery_requests_requested_at", table_name="redelivery_requests")
    op.drop_table("redelivery_requests")
