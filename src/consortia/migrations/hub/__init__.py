"""The hub database's migration environment (Alembic; see :mod:`consortia.migrations`)."""
