"""Fixtures of the end-to-end tests: fresh databases and deployments that are always torn down."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import IN_CI, PG_URL
from tests.e2e.harness import Deployment, deploy

_names = itertools.count()


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """The URL of an empty database (SQLite file, or a PostgreSQL database of its own)."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'handover.db'}"
        return
    base = make_url(PG_URL)
    name = f"{base.database}_e2e_{os.getpid()}_{next(_names)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL at {base.render_as_string(hide_password=True)} unreachable: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def new_deployment(tmp_path: Path) -> Iterator[DeploymentFactory]:
    """`new_deployment(backend, start)`: a deployed rota, stand-in and clock; stopped after."""
    with ExitStack() as stack:

        def make(backend: str, start: datetime) -> Deployment:
            workdir = tmp_path / f"{backend}-{next(_names)}"
            workdir.mkdir()
            url = stack.enter_context(fresh_database(backend, workdir))
            deployment = deploy(workdir, url, start)
            stack.callback(deployment.standin.stop)
            stack.callback(deployment.stop_all)  # callbacks run last-in first-out
            return deployment

        yield make
