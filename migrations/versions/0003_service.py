"""redaudit 0.2.0: the service's tables — jobs, API tokens, uploaded blobs.

Revision ID: 0003
Revises: 0001 (temporarily; 0002, version aliases, lands on another branch: then 0002)
Create Date: 2026-11-28 (redaudit serve)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
# TODO(merge): '0002' once the version-aliases revision is merged.
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('service_blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('model_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_service_blobs'))
    )
    op.create_table('service_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_service_tokens')),
    sa.UniqueConstraint('secret_sha256', name=op.f('uq_service_tokens_secret_sha256'))
    )
    op.create_table('service_jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('queue', sa.String(length=16), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('blob_sha256', sa.String(length=64), nullable=False),
    sa.Column('inputs_sha256', sa.String(length=64), nullable=True),
    sa.Column('spec', sa.Text(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('record', sa.Boolean(), nullable=False),
    sa.Column('progress_stage', sa.String(length=40), nullable=True),
    sa.Column('progress_done', sa.BigInteger(), nullable=False),
    sa.Column('progress_total', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('lease_token', sa.String(length=32), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('scan_id', sa.Integer(), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('outcome', sa.JSON(), nullable=True),
    sa.Column('output_sha256', sa.String(length=64), nullable=True),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['blob_sha256'], ['service_blobs.sha256'], name=op.f('fk_service_jobs_blob_sha256_service_blobs')),
    sa.ForeignKeyConstraint(['inputs_sha256'], ['service_blobs.sha256'], name=op.f('fk_service_jobs_inputs_sha256_service_blobs')),
    sa.ForeignKeyConstraint(['output_sha256'], ['service_blobs.sha256'], name=op.f('fk_service_jobs_output_sha256_service_blobs')),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_service_jobs_scan_id_scans'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['token_id'], ['service_tokens.id'], name=op.f('fk_service_jobs_token_id_service_tokens'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_service_jobs')),
    sa.UniqueConstraint('scan_id', name=op.f('uq_service_jobs_scan_id'))
    )
    with op.batch_alter_table('service_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_service_jobs_state_queue', ['state', 'queue'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('service_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_service_jobs_state_queue')
        batch_op.drop_index(batch_op.f('ix_service_jobs_created_at'))

    op.drop_table('service_jobs')
    op.drop_table('service_tokens')
    op.drop_table('service_blobs')
