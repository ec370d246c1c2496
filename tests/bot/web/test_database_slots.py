"""The case-system API queues for a database slot when the database is busy, and is answered
503 with Retry-After within a bounded time when it is stalled (docs/reference/http.md)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from slack_sdk import WebClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from bot.clock import FixedClock
from bot.context import Services
from bot.db import SERVICE_TIMEOUTS
from bot.models import Referral
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from bot.web.app import create_app
from bot.web.http import (
    API_RETRY_AFTER_SECONDS,
    API_SLOT_QUEUE,
    API_SLOT_WAIT_SECONDS,
    DEFAULT_DATABASE_SLOTS,
    create_web_app,
)
from tests.bot.rota_fixtures import build_rota
from tests.bot.test_api import SECRET, T0, signature, weekend_referral
from tests.handlers.slack_payloads import BOT_TOKEN, EDT_CHANNEL, SIGNING_SECRET

CLIENTS = 20


@dataclass
class Answer:
    status: int
    body: dict
    retry_after: str | None


@dataclass
class Api:
    port: int

    def post(self, external_ref: str) -> Answer:
        body = json.dumps(weekend_referral(external_ref=external_ref)).encode()
        timestamp = str(int(T0.timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Handover-Timestamp": timestamp,
            "X-Handover-Signature": signature(SECRET, timestamp, body),
        }
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", "/api/referrals", body=body, headers=headers)
            response = conn.getresponse()
            assert response.getheader("Content-Type") == "application/json"
            return Answer(
                response.status, json.loads(response.read()), response.getheader("Retry-After")
            )
        finally:
            conn.close()


@contextmanager
def serving_web_app(
    session_factory: sessionmaker[Session], *, database_slots: int = DEFAULT_DATABASE_SLOTS
) -> Iterator[Api]:
    """`serve`'s whole Flask app (create_web_app) on a free local port, one thread a request."""
    with SlackStandIn(channels=[EDT_CHANNEL], allow_unknown_users=True, rate_limit=None) as slack:
        clock = FixedClock(T0)
        settings = Settings(
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack.url,
            edt_channel=EDT_CHANNEL,
            api_secret=SECRET,
        )
        services = Services(settings, session_factory, clock)
        client = WebClient(base_url=slack.url, token=BOT_TOKEN)
        web = create_web_app(
            create_app(settings, client, services=services), services, database_slots=database_slots
        )
        server = make_server("127.0.0.1", 0, web, threaded=True)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield Api(server.server_port)
        finally:
            server.shutdown()
            thread.join(timeout=10)
            server.server_close()


def all_at_once(count: int, send) -> list[tuple[Answer, float]]:
    """`send(i)` from `count` threads released together; each answer with its seconds taken."""
    start = threading.Barrier(count)
    answers: list[tuple[Answer, float] | None] = [None] * count

    def run(i: int) -> None:
        start.wait()
        began = time.monotonic()
        answer = send(i)
        answers[i] = (answer, time.monotonic() - began)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]


@contextmanager
def slow_referral_inserts(engine: Engine, *, seconds: float | None) -> Iterator[threading.Event]:
    """Every INSERT of a referral takes `seconds` (None: waits until the yielded event is set)."""
    release = threading.Event()

    def before(_conn, _cursor, statement, _params, _context, _many) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REFERRALS"):
            if seconds is None:
                release.wait(timeout=60)
            else:
                time.sleep(seconds)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield release
    finally:
        release.set()
        event.remove(engine, "before_cursor_execute", before)


def referrals(session_factory: sessionmaker[Session]) -> dict[str, int]:
    with session_factory() as session:
        rows = session.execute(
            select(Referral.external_ref, func.count()).group_by(Referral.external_ref)
        )
        return dict(rows.all())


def test_twenty_concurrent_referrals_on_a_busy_database_all_get_201(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # Each referral's insert takes 0.06 s, so 16 slots stay held longer than Slack's 50 ms
    # wait: the 4 requests over the slots must queue, not be refused.
    build_rota(session_factory)
    with (
        serving_web_app(session_factory) as api,
        slow_referral_inserts(engine, seconds=0.06),
    ):
        answers = all_at_once(CLIENTS, lambda i: api.post(f"LCS-BUSY-{i:02d}"))
    assert [answer.status for answer, _ in answers] == [201] * CLIENTS, [
        (answer.status, answer.body) for answer, _ in answers if answer.status != 201
    ]
    assert referrals(session_factory) == {f"LCS-BUSY-{i:02d}": 1 for i in range(CLIENTS)}


def test_a_stalled_database_is_answered_503_with_retry_after_within_the_bounded_wait(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    build_rota(session_factory)
    slots = 1  # held by a request whose insert never returns
    with (
        serving_web_app(session_factory, database_slots=slots) as api,
        slow_referral_inserts(engine, seconds=None) as release,
    ):
        holders = [threading.Thread(target=api.post, args=(f"LCS-HELD-{i}",)) for i in range(slots)]
        for holder in holders:
            holder.start()
        time.sleep(0.5)  # the slot is taken and its insert stalled
        # The queue fills; one more than it holds is refused at once, the queued at the bound.
        answers = all_at_once(
            API_SLOT_QUEUE + 1,
            lambda i: api.post(f"LCS-STALL-{i}"),
        )
        release.set()
        for holder in holders:
            holder.join(timeout=30)
    statuses = sorted(answer.status for answer, _ in answers)
    assert statuses == [503] * (API_SLOT_QUEUE + 1)
    waits = sorted(took for _, took in answers)
    assert waits[0] < 1.0  # the one the full queue refused without waiting
    assert all(API_SLOT_WAIT_SECONDS <= took < API_SLOT_WAIT_SECONDS + 2 for took in waits[1:])
    for answer, _ in answers:
        assert answer.body == {"error": "busy: the database is slow; try again"}
        assert answer.retry_after == str(API_RETRY_AFTER_SECONDS)
    assert referrals(session_factory) == {"LCS-HELD-0": 1}


def test_the_api_waits_as_long_as_a_statement_may_take() -> None:
    assert API_SLOT_WAIT_SECONDS == SERVICE_TIMEOUTS.statement == 4.0
    assert API_RETRY_AFTER_SECONDS == 5
