"""Alembic environment of the hub's schema: always run from ``forge_secure.hub.db.migrate``
with an open connection (``config.attributes["connection"]``)."""

from alembic import context

from forge_secure.hub.db import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA)
with context.begin_transaction():
    context.run_migrations()
