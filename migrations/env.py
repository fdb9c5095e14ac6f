"""Alembic environment: the URL comes from the caller (filejobs.migrate) or from FILEJOBS_ settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from filejobs.db import make_engine
from filejobs.models import metadata
from filejobs.settings import get_settings

config = context.config

#: The advisory lock key for migrations ("fj-migr" in ASCII).
MIGRATION_LOCK = int.from_bytes(b"fj-migr", "big")
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url(), null_pool=True)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Nodes starting together migrate one at a time; the later ones then find
                    # the schema current. (On SQLite, BEGIN IMMEDIATE serialises them already.)
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
