"""Alembic environment: the URL comes from the config `distill.service.db.migrate` builds."""

from alembic import context
from sqlalchemy import create_engine, pool

from distill.service.db import Base

config = context.config


def run_migrations() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
