"""Database engine and session factory, with timeouts at every step that can wait.

A request must never hang on the database: a connection attempt, a wait for a pooled
connection, a statement, a lock and a server that stops answering each have a bound. The
bounds of `SERVICE_TIMEOUTS` (serve, dispatch) keep a Slack request within its 3 seconds when
the database is healthy and fail it within a few seconds when it is not; command-line batch
work (imports, reports, migrations) gets `BATCH_TIMEOUTS`. See docs/security.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DbTimeouts:
    """How long each step may wait, in seconds."""

    connect: int  # TCP connection and PostgreSQL start-up (libpq's minimum is 2)
    pool: float  # waiting for a pooled connection when all are in use
    statement: float  # server-side statement_timeout (and SQLite's busy timeout)
    lock: float  # server-side lock_timeout
    idle_in_transaction: float  # the server ends a session that holds a transaction idle
    unanswered: float  # client-side: a server that answers nothing this long is cut off


SERVICE_TIMEOUTS = DbTimeouts(
    connect=3, pool=2.0, statement=4.0, lock=3.0, idle_in_transaction=300.0, unanswered=6.0
)
BATCH_TIMEOUTS = DbTimeouts(
    connect=10, pool=30.0, statement=600.0, lock=60.0, idle_in_transaction=3600.0, unanswered=660.0
)

# Connections beyond the pool's 5, opened only while needed: `serve` lets 16 Slack and 16 API
# requests at the database at once (bot/web/http.py), besides its replay checks, /healthz and
# the dispatcher; SQLAlchemy's default of 10 made the 16th API request wait out `pool` and fail.
MAX_OVERFLOW = 40


def create_db_engine(url: str, *, timeouts: DbTimeouts = SERVICE_TIMEOUTS, **kwargs) -> Engine:
    """An engine for `url` bounded by `timeouts`; SQLite uses WAL, foreign keys and BEGIN
    IMMEDIATE."""
    parsed = make_url(url)
    # Statement parameters can hold a referral's summary: never put them in logs or errors.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", timeouts.statement)
        connect_args.setdefault("check_same_thread", False)
        in_memory = parsed.database in (None, "", ":memory:")
        if not in_memory:
            kwargs.setdefault("pool_timeout", timeouts.pool)
            kwargs.setdefault("max_overflow", MAX_OVERFLOW)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, in_memory=in_memory, busy_ms=int(timeouts.statement * 1000))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_timeout", timeouts.pool)
    kwargs.setdefault("max_overflow", MAX_OVERFLOW)
    connect_args = kwargs.pop("connect_args", {})
    for key, value in postgres_connect_args(timeouts).items():
        connect_args.setdefault(key, value)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    UNANSWERED_WATCHDOG.watch(engine, timeouts.unanswered)
    return engine


def postgres_connect_args(timeouts: DbTimeouts) -> dict[str, object]:
    """libpq parameters: start-up, statement and lock bounds, and dead-peer detection."""
    options = " ".join(
        f"-c {name}={int(seconds * 1000)}"
        for name, seconds in (
            ("statement_timeout", timeouts.statement),
            ("lock_timeout", timeouts.lock),
            ("idle_in_transaction_session_timeout", timeouts.idle_in_transaction),
        )
    )
    return {
        "connect_timeout": max(2, timeouts.connect),
        "options": options,
        # A peer that vanishes (packets dropped) is noticed by the kernel: unacknowledged data
        # fails after tcp_user_timeout, an idle connection after the keepalive probes.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeouts.unanswered * 1000),
    }


class UnansweredWatchdog:
    """Cuts off a PostgreSQL connection whose server has answered nothing for too long.

    statement_timeout is enforced by the server, and the kernel's timeouts only see packets
    that go unacknowledged; a server or proxy that accepts bytes and then answers nothing
    would hold a thread for ever. Every connection an engine opens is watched: one that has
    waited `limit` seconds on a single request (a statement, a commit, a ping) has its socket
    shut down, so the waiting thread gets an OperationalError and the pool discards it.
    """

    PERIOD = 0.25

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: weakref.WeakKeyDictionary[object, _Watched] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None

    def watch(self, engine: Engine, limit: float) -> None:
        """Watch every connection `engine` opens, cutting off one silent for `limit` seconds."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            with self._lock:
                self._watched[dbapi_connection] = _Watched(limit)
                self._start()

        @event.listens_for(engine, "before_cursor_execute")
        def _on_execute(conn, _cursor, _statement, _parameters, _context, _many) -> None:
            self._new_request(conn)

        for name in ("commit", "rollback"):

            @event.listens_for(engine, name)
            def _on_end(conn) -> None:
                self._new_request(conn)

    def _new_request(self, conn) -> None:
        if conn.invalidated:
            return  # cut off (or lost): nothing left to watch
        watched = self._watched.get(conn.connection.dbapi_connection)
        if watched is not None:
            watched.requests += 1

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="db-unanswered-watchdog", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.PERIOD)
            with self._lock:
                watched = list(self._watched.items())
            now = time.monotonic()
            for connection, state in watched:
                if state.overdue(connection, now):
                    _cut_off(connection, state.limit)


class _Watched:
    """What the watchdog knows of one connection: its bound and the request it waits on."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.requests = 0  # bumped at each statement, commit and rollback
        self._seen: tuple[int, float] | None = None  # (request, first seen waiting)

    def overdue(self, connection, now: float) -> bool:
        if not _waiting_on_server(connection):
            self._seen = None
            return False
        if self._seen is None or self._seen[0] != self.requests:
            self._seen = (self.requests, now)
            return False
        return now - self._seen[1] > self.limit


def _waiting_on_server(connection) -> bool:
    """Whether a psycopg connection has a request in flight (libpq's PQTRANS_ACTIVE)."""
    try:
        if connection.closed:
            return False
        from psycopg.pq import TransactionStatus

        return connection.info.transaction_status == TransactionStatus.ACTIVE
    except Exception:
        return False


def _cut_off(connection, limit: float) -> None:
    try:
        fd = os.dup(connection.fileno())
    except Exception:
        return  # closed meanwhile
    try:
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    logger.error("database answered nothing for %.0f s: connection cut off", limit)


UNANSWERED_WATCHDOG = UnansweredWatchdog()


def _configure_sqlite(engine: Engine, in_memory: bool, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy own transactions, so BEGIN IMMEDIATE below is honoured.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        # A writer waits this long for another's transaction, then fails cleanly.
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        if conn.get_execution_options().get(READS_ONLY):
            # A read (`reading`): a deferred BEGIN takes no lock until it reads, and in WAL
            # mode a reader neither waits for a writer nor holds one up.
            conn.exec_driver_sql("BEGIN")
            return
        # Take the write lock at the start: writers queue on busy_timeout instead of
        # failing with "database is locked" when they upgrade a read lock later.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


# The execution option of a session that only reads (`reading`).
READS_ONLY = "handover_reads_only"


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads only, rolled back at the end: on SQLite its transaction takes no
    write lock (a unit of work's BEGIN IMMEDIATE does), so a check that finds nothing to do
    neither waits for a writer nor holds one up. Nothing it writes is kept."""
    with factory() as session:
        session.connection(execution_options={READS_ONLY: True})
        try:
            yield session
        finally:
            session.rollback()


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any exception."""
    with factory.begin() as session:
        yield session


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def driver_query(connection: Connection, statement: Select) -> tuple[str, Any]:
    """The statement's SQL and its parameters, converted by their types as SQLAlchemy would
    convert them, in the form the connection's driver takes (a tuple or a mapping), for reading
    rows through the driver's own cursor where SQLAlchemy's rows cost too much (the log, the
    report's summary). An IN list's values are rendered one parameter each and passed as given."""
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    for name, bind in compiled.binds.items():
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None and name in values:
            values[name] = convert(values[name])
    if compiled.positional:
        return compiled.string, tuple(values[name] for name in compiled.positiontup or ())
    return compiled.string, values
