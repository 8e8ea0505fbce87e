"""deferred deployment triggers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 01:18:13.436445
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('deployment_trigger',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('deployment_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('deployment_trigger', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployment_trigger_deployment_id'), ['deployment_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('deployment_trigger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployment_trigger_deployment_id'))

    op.drop_table('deployment_trigger')

