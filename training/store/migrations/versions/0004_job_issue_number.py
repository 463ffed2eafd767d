"""webhook jobs remember their issue, so jobs of different issues run side by side; unfinished
jobs are found per repository by index

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
    # Jobs accepted before this revision keep NULL: they are ordered as repository-wide events.
    op.add_column("webhook_jobs", sa.Column("issue_number", sa.Integer(), nullable=True))
    # Unfinished jobs of a repository are found without walking its finished ones.
    op.drop_index("ix_webhook_jobs_repository", table_name="webhook_jobs")
    op.create_index("ix_webhook_jobs_repository_status", "webhook_jobs", ["repository", "status"])


def downgrade() -> None:
    op.drop_index("ix_webhook_jobs_repository_status", table_name="webhook_jobs")
    op.create_index("ix_webhook_jobs_repository", "webhook_jobs", ["repository"])
    with op.batch_alter_table("webhook_jobs") as batch:
        batch.drop_column("issue_number")
