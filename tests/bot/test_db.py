"""Every wait on the database is bounded: connecting, a pooled connection, a statement, a lock,
a server that answers nothing (PostgreSQL through a stalling proxy) and SQLite's busy lock."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.db import (
    SERVICE_TIMEOUTS,
    UnansweredWatchdog,
    create_db_engine,
    make_session_factory,
    reading,
)
from tests.chaos.stall_proxy import StallProxy

QUICK = replace(SERVICE_TIMEOUTS, unanswered=1.0)


def through(proxy: StallProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


def test_service_connections_carry_statement_lock_and_idle_timeouts(pg_database_url: str) -> None:
    engine = create_db_engine(pg_database_url)
    try:
        with engine.connect() as conn:
            shown = {
                name: conn.execute(text(f"SHOW {name}")).scalar()
                for name in (
                    "statement_timeout",
                    "lock_timeout",
                    "idle_in_transaction_session_timeout",
                    "tcp_user_timeout",
                )
            }
    finally:
        engine.dispose()
    assert shown["statement_timeout"] == "4s"
    assert shown["lock_timeout"] == "3s"
    assert shown["idle_in_transaction_session_timeout"] == "5min"


def test_a_statement_longer_than_the_statement_timeout_is_cancelled(pg_database_url: str) -> None:
    engine = create_db_engine(pg_database_url)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"), engine.connect() as c:
            c.execute(text("SELECT pg_sleep(30)"))
        assert 3.9 < time.monotonic() - started < 6
    finally:
        engine.dispose()


def test_a_server_that_stops_answering_is_cut_off_and_the_pool_recovers(
    pg_database_url: str,
) -> None:
    with StallProxy() as proxy:
        engine = create_db_engine(through(proxy, pg_database_url), timeouts=QUICK)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
                proxy.stall()
                started = time.monotonic()
                with pytest.raises(OperationalError):
                    conn.execute(text("SELECT 2"))
                assert 1.0 < time.monotonic() - started < 2.5
            proxy.resume()
            # The cut-off connection was discarded: the next checkout gets a working one.
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 3")).scalar() == 3
        finally:
            engine.dispose()


def test_connecting_to_a_stalled_server_gives_up_after_the_connect_timeout(
    pg_database_url: str,
) -> None:
    with StallProxy() as proxy:
        proxy.stall()
        engine = create_db_engine(through(proxy, pg_database_url))
        try:
            started = time.monotonic()
            with pytest.raises(OperationalError), engine.connect():
                pass
            assert time.monotonic() - started < SERVICE_TIMEOUTS.connect + 1.5
        finally:
            engine.dispose()


def test_waiting_for_a_pooled_connection_is_bounded(pg_database_url: str) -> None:
    engine = create_db_engine(pg_database_url, pool_size=1, max_overflow=0)
    try:
        with engine.connect():
            started = time.monotonic()
            with pytest.raises(PoolTimeout), engine.connect():
                pass
            assert SERVICE_TIMEOUTS.pool <= time.monotonic() - started < SERVICE_TIMEOUTS.pool + 1
    finally:
        engine.dispose()


def test_a_sqlite_writer_waits_for_the_lock_at_most_the_statement_timeout(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    holder, waiter = create_db_engine(url), create_db_engine(url)
    try:
        with holder.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        held, done = threading.Event(), threading.Event()

        def hold_the_write_lock() -> None:
            with holder.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
                held.set()
                done.wait(timeout=30)

        thread = threading.Thread(target=hold_the_write_lock)
        thread.start()
        held.wait(timeout=5)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"), waiter.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        elapsed = time.monotonic() - started
        done.set()
        thread.join()
        assert SERVICE_TIMEOUTS.statement - 0.2 < elapsed < SERVICE_TIMEOUTS.statement + 1.5
    finally:
        holder.dispose()
        waiter.dispose()


def test_the_watchdog_ignores_idle_connections_and_short_requests() -> None:
    class Connection:
        closed = False

        def __init__(self) -> None:
            self.active = False

        @property
        def info(self):
            from psycopg.pq import TransactionStatus

            status = TransactionStatus.ACTIVE if self.active else TransactionStatus.IDLE
            return type("Info", (), {"transaction_status": status})()

    from bot.db import _Watched

    conn, state = Connection(), _Watched(limit=1.0)
    assert not state.overdue(conn, 0.0)  # idle
    conn.active = True
    assert not state.overdue(conn, 0.0)  # first seen waiting
    state.requests += 1  # a new statement: the clock starts again
    assert not state.overdue(conn, 0.9)
    assert not state.overdue(conn, 1.8)
    assert state.overdue(conn, 2.0)
    conn.active = False
    assert not state.overdue(conn, 9.0)
    assert UnansweredWatchdog.PERIOD < 1


def test_a_reading_session_takes_no_write_lock_and_keeps_nothing(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'reads.db'}"
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with factory.begin() as writer:
            writer.execute(text("INSERT INTO t VALUES (2)"))  # holds the write lock
            with reading(factory) as session:
                # Reads what was committed, at once, while the writer holds its lock.
                assert session.scalars(text("SELECT x FROM t")).all() == [1]
        with reading(factory) as session:
            session.execute(text("DELETE FROM t"))
        with factory() as session:
            assert session.scalars(text("SELECT x FROM t ORDER BY x")).all() == [1, 2]
    finally:
        engine.dispose()
