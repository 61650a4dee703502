"""redaudit 0.2.0: two facts of a scan's run kept in the history — the onnxruntime micro-batch the
memory budget chose (issue 21) and what one IR is, the unit ("decoder layer", "residual block";
issue 23). Both were in the result, JSON and HTML report but lost on ``--record``.

Nullable: rows recorded before this revision do not know them, and NULL says so (0 or "" would
read as a measured value). Plain ADD/DROP COLUMN, no batch copy of ``scans``: SQLite has had
``ALTER TABLE ... DROP COLUMN`` since 3.35, and a batch recreate under ``foreign_keys = ON``
would cascade-delete the scans' layers and matrices.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 (issue 21, micro-batches; issue 23, units)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('scans', sa.Column('micro_batch', sa.Integer(), nullable=True))
    op.add_column('scans', sa.Column('unit', sa.String(length=80), nullable=True))


def downgrade() -> None:
    op.drop_column('scans', 'unit')
    op.drop_column('scans', 'micro_batch')
