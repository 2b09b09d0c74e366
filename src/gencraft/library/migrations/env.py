"""Alembic environment for the gencraft library (run programmatically by :func:`gencraft.library.migrate`).

The caller hands over an open connection in ``config.attributes["connection"]``; nothing here
reads an ini file or the network.
"""

from __future__ import annotations

from alembic import context

from gencraft.library.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
