"""redaudit 0.1.0: the first history schema (models, versions, scans, layers, similarity).

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 (redaudit 0.1.0)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', name=op.f('uq_models_name'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('parameter_count', sa.BigInteger(), nullable=False),
    sa.Column('opset', sa.Integer(), nullable=False),
    sa.Column('producer', sa.String(length=200), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_versions_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['model_versions.id'], name=op.f('fk_model_versions_parent_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_id', 'label', name=op.f('uq_model_versions_model_id_label')),
    sa.UniqueConstraint('model_id', 'sha256', name=op.f('uq_model_versions_model_id_sha256'))
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_sha256'), ['sha256'], unique=False)

    op.create_table('scans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('redaudit_version', sa.String(length=40), nullable=False),
    sa.Column('level', sa.String(length=20), nullable=False),
    sa.Column('reduce', sa.String(length=20), nullable=False),
    sa.Column('cka_batch', sa.Integer(), nullable=True),
    sa.Column('estimator', sa.String(length=20), nullable=False),
    sa.Column('aggregate', sa.String(length=20), nullable=False),
    sa.Column('epsilon', sa.Float(), nullable=False),
    sa.Column('beta', sa.Float(), nullable=False),
    sa.Column('taps', sa.JSON(), nullable=False),
    sa.Column('samples_requested', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('inputs_real', sa.Boolean(), nullable=False),
    sa.Column('input_hash', sa.String(length=64), nullable=False),
    sa.Column('device', sa.String(length=20), nullable=False),
    sa.Column('backend', sa.String(length=20), nullable=False),
    sa.Column('provider', sa.String(length=80), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('batches', sa.Integer(), nullable=False),
    sa.Column('dropped_samples', sa.Integer(), nullable=False),
    sa.Column('nan_batches', sa.Integer(), nullable=False),
    sa.Column('layer_count', sa.Integer(), nullable=False),
    sa.Column('msrs', sa.Float(), nullable=True),
    sa.Column('msrs_std', sa.Float(), nullable=True),
    sa.Column('msrs_batches', sa.JSON(), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('load_s', sa.Float(), nullable=True),
    sa.Column('tap_s', sa.Float(), nullable=True),
    sa.Column('run_s', sa.Float(), nullable=True),
    sa.Column('similarity_s', sa.Float(), nullable=True),
    sa.Column('total_s', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_scans_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scans'))
    )
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scans_version_id_created_at'), ['version_id', 'created_at'], unique=False)

    op.create_table('scan_layers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('op', sa.String(length=80), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('node', sa.Text(), nullable=False),
    sa.Column('redundancy', sa.Float(), nullable=True),
    sa.Column('most_similar', sa.Text(), nullable=True),
    sa.Column('most_similar_cka', sa.Float(), nullable=True),
    sa.Column('issue', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_scan_layers_scan_id_scans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_layers')),
    sa.UniqueConstraint('scan_id', 'position', name=op.f('uq_scan_layers_scan_id_position'))
    )
    op.create_table('similarity_matrices',
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('layer_order', sa.JSON(), nullable=False),
    sa.Column('npy', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_similarity_matrices_scan_id_scans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scan_id', name=op.f('pk_similarity_matrices'))
    )


def downgrade() -> None:
    op.drop_table('similarity_matrices')
    op.drop_table('scan_layers')
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scans_version_id_created_at'))

    op.drop_table('scans')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_versions_sha256'))

    op.drop_table('model_versions')
    op.drop_table('models')
