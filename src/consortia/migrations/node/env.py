"""Alembic's entry point for this database (see :mod:`consortia.migrations`)."""

from consortia.migrations._env import run

run()
