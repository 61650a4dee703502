"""redaudit 0.2.0: prune verifications — how a recorded pruned version compares with its parent
(policy, healing, removed blocks, output drift, top-1 agreement, and a causal LM's next-token KL and
perplexities), one row per ``prune --record``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 (issue 23, LM depth pruning)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prune_verifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('policy', sa.String(length=40), nullable=False),
    sa.Column('heal', sa.String(length=20), nullable=False),
    sa.Column('removed', sa.JSON(), nullable=False),
    sa.Column('probe_real', sa.Boolean(), nullable=False),
    sa.Column('drift', sa.Float(), nullable=True),
    sa.Column('top1_agreement', sa.Float(), nullable=True),
    sa.Column('kl_mean', sa.Float(), nullable=True),
    sa.Column('perplexity_original', sa.Float(), nullable=True),
    sa.Column('perplexity_pruned', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_prune_verifications_scan_id_scans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prune_verifications')),
    sa.UniqueConstraint('scan_id', name=op.f('uq_prune_verifications_scan_id'))
    )


def downgrade() -> None:
    op.drop_table('prune_verifications')
