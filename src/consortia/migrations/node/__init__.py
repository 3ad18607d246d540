"""The node database's migration environment (Alembic; see :mod:`consortia.migrations`)."""
