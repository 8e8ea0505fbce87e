"""durable triggers, redeploy requests and the decision log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 23:49:53.865466
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('decision_log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('release_target_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('deployment_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('environment_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('version_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('evaluated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('policy_revisions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('document', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    with op.batch_alter_table('decision_log', schema=None) as batch_op:
        batch_op.create_index('ix_decision_deployment_env_at', ['deployment_id', 'environment_id', 'evaluated_at'], unique=False)
        batch_op.create_index('ix_decision_target_at', ['release_target_id', 'evaluated_at'], unique=False)

    with op.batch_alter_table('release_target', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dirty_generation', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('evaluated_generation', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('next_evaluation_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('lock_seq', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_decision_key', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('requested_version_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True))
        batch_op.add_column(sa.Column('requested_by', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('requested_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('requested_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_release_target_next_evaluation_at'), ['next_evaluation_at'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('release_target', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_release_target_next_evaluation_at'))
        batch_op.drop_column('requested_at')
        batch_op.drop_column('requested_reason')
        batch_op.drop_column('requested_by')
        batch_op.drop_column('requested_version_id')
        batch_op.drop_column('last_decision_key')
        batch_op.drop_column('lock_seq')
        batch_op.drop_column('next_evaluation_at')
        batch_op.drop_column('evaluated_generation')
        batch_op.drop_column('dirty_generation')

    with op.batch_alter_table('decision_log', schema=None) as batch_op:
        batch_op.drop_index('ix_decision_target_at')
        batch_op.drop_index('ix_decision_deployment_env_at')

    op.drop_table('decision_log')

