"""Alembic environment: runs on the connection the server hands over (see ``db.migrate``)."""

from alembic import context

from pipenb.server.db_tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` command line, for developers writing a migration
    from sqlalchemy import create_engine

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: set sqlalchemy.url (in alembic.ini or with -x) to migrate")
    engine = create_engine(url)
    connection = engine.connect()
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
