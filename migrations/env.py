"""Alembic environment: the URL comes from DATABASE_URL (or the caller), never from a file."""

from __future__ import annotations

import os

from alembic import context

import bot.models  # registers the referral tables on the metadata
import bot.workspaces.store  # noqa: F401  (registers the OAuth stores' tables on the metadata)
from bot.db import BATCH_TIMEOUTS, create_db_engine
from bot.settings import DEFAULT_DATABASE_URL, normalize_database_url
from rota.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return normalize_database_url(
        config.attributes.get("database_url")
        or os.environ.get("DATABASE_URL", "").strip()
        or DEFAULT_DATABASE_URL
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_db_engine(_url(), timeouts=BATCH_TIMEOUTS)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
