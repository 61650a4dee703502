"""Version aliases: every label of a version in one table, unique per model.

A second label on the same bytes used to be kept only on the scan, so `history` never showed it
and `diff NAME v1 v2` compared a scan with itself. Now each label is a row of
``version_labels``; the first stays ``model_versions.label`` (the version's name). Existing
labels are copied: version names first, then scan labels that named no version (the old way
of relabelling an unchanged file), each becoming an alias of its scan's version unless the
label already names another version of that model.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('version_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_version_labels_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_version_labels_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_version_labels')),
    sa.UniqueConstraint('model_id', 'label', name=op.f('uq_version_labels_model_id_label'))
    )
    with op.batch_alter_table('version_labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_version_labels_version_id'), ['version_id'], unique=False)
    _copy_existing_labels()


def _copy_existing_labels() -> None:
    connection = op.get_bind()
    labels = sa.table('version_labels', sa.column('model_id'), sa.column('version_id'),
                      sa.column('label'), sa.column('created_at'))
    names = connection.execute(sa.text(
        "SELECT model_id, id, label, created_at FROM model_versions WHERE label IS NOT NULL "
        "ORDER BY created_at, id")).all()
    scans = connection.execute(sa.text(
        "SELECT v.model_id, s.version_id, s.label, MIN(s.created_at) FROM scans s "
        "JOIN model_versions v ON v.id = s.version_id WHERE s.label IS NOT NULL "
        "GROUP BY v.model_id, s.version_id, s.label ORDER BY MIN(s.created_at)")).all()
    taken: set[tuple[int, str]] = set()
    rows = []
    for model_id, version_id, label, created_at in [*names, *scans]:
        if (model_id, label) not in taken:
            taken.add((model_id, label))
            rows.append(dict(model_id=model_id, version_id=version_id, label=label,
                             created_at=created_at))
    if rows:
        op.bulk_insert(labels, rows)


def downgrade() -> None:
    with op.batch_alter_table('version_labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_version_labels_version_id'))

    op.drop_table('version_labels')
