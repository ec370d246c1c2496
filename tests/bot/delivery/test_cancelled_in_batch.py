"""A referral closed while its prompt is claimed in a dispatcher's batch (docs/timing.md,
"Cancelled in a batch"), through the real dispatcher and the Slack stand-in, on both databases.

The close cancels the claimed row too; the check just before the send refuses it, so nothing is
sent and the close's `prompt_cancelled` is the whole record. A send already on its way when the
close commits (held at the stand-in by a `hold` fault) reaches Slack: it is recorded as sent,
once, with why it was no longer owed, and the card is redrawn as after any close.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery import outbox
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.kinds import OutboxKind, Outcome, RowState
from bot.delivery.results import DispatchStats
from bot.models import OutboxMessage, Target
from bot.services.closing import close_referral
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from rota.models import Person
from tests.bot.delivery.dispatch_fixtures import (
    EDT,
    MONDAY_9,
    REFERRAL_ID,
    TOKEN,
    events,
    hold_the_pacers_clock,
    make_dispatcher,
    messages_for,
    setup_one_prompt,
)
from tests.bot.delivery.test_overrun import dm_posts, prompt_results

CLOSER = "U0MGR"  # Pat Manager (edt-mgr), given oversight: may close any referral


def one_prompt_and_a_closer(factory: sessionmaker[Session]) -> int:
    prompt_id = setup_one_prompt(factory)
    with factory.begin() as session:
        session.get(Person, "edt-mgr").permissions = "oversight"
    return prompt_id


def close_now(factory: sessionmaker[Session], settings: Settings, clock) -> None:
    """Pat Manager closes the referral, as `/handover close` does, in a transaction of its own."""
    with factory.begin() as session:
        outcome = close_referral(
            session, REFERRAL_ID, CLOSER, "Family moved away", now=clock.now(), settings=settings
        )
    assert (outcome.status, outcome.cancelled_prompts, outcome.cancelled_rows) == ("closed", 1, 1)


def row_of(factory: sessionmaker[Session], row_id: int) -> OutboxMessage:
    with factory() as session:
        row = session.get(OutboxMessage, row_id)
        assert row is not None
        return row


def kinds_of_rows(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    with factory() as session:
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [(row.kind, row.state) for row in rows]


def target_state(factory: sessionmaker[Session]) -> str:
    with factory() as session:
        return session.scalars(select(Target)).one().state


def test_a_prompt_waiting_for_a_rate_token_when_its_referral_closes_is_not_sent(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    # One message a second, and this second's token already taken: the batch waits for the
    # next one, and the referral is closed meanwhile.
    dispatcher = make_dispatcher(
        dataclasses.replace(settings, slack_rate=1.0), session_factory, clock
    )
    waited: list[float] = []
    # Else the prompt could be sent before the close.
    hold_the_pacers_clock(monkeypatch, dispatcher.pacer, until=waited)
    dispatcher.pacer.wait(TOKEN, "chat.postMessage")

    def close_while_waiting(seconds: float) -> None:
        if not waited:
            close_now(session_factory, settings, clock)
        waited.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(dispatcher.pacer, "_sleep", close_while_waiting)
    stats = dispatcher.run_once()

    assert len(waited) >= 1  # it did wait on the rate limit
    # The prompt is cancelled; the card the close redraws goes out in the same pass.
    assert [(r.row_id, r.kind, r.outcome, r.reason) for r in stats.results] == [
        (prompt_id, OutboxKind.PROMPT, Outcome.CANCELLED, "referral closed"),
        (prompt_id + 1, OutboxKind.CARD, Outcome.DELIVERED, None),
    ]
    assert (stats.cancelled, stats.sent, stats.lost_claims) == (1, 0, 0)
    assert dm_posts(slack) == []
    assert messages_for(slack, prompt_id) == []
    row = row_of(session_factory, prompt_id)
    assert (row.state, row.claimed_by, row.claimed_until, row.last_error, row.sent_at) == (
        RowState.CANCELLED,
        "test",
        None,
        "referral closed",
        None,
    )
    assert [e.event for e in events(session_factory)] == ["prompt_cancelled", "referral_closed"]
    [cancelled] = events(session_factory, "prompt_cancelled")
    assert (cancelled.actor, cancelled.target) == ("edt-mgr", "person:hv-jsmith")
    assert json.loads(cancelled.detail) == {
        "prompt_id": prompt_id,
        "reason": "referral closed",
        "in_batch": True,
    }
    [closed] = events(session_factory, "referral_closed")
    assert json.loads(closed.detail) == {"cancelled_outbox_rows": 1, "cancelled_prompts": 1}

    [card] = slack.messages(EDT)
    assert "(closed)" in json.dumps(card["blocks"])
    assert target_state(session_factory) == "cancelled"
    # Nothing is left to send.
    assert make_dispatcher(settings, session_factory, clock).run_once().results == []
    assert dm_posts(slack) == []


def test_a_prompt_claimed_before_the_close_and_composed_after_it_is_not_sent(
    session_factory, slack: SlackStandIn, settings: Settings, clock
) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    with session_factory.begin() as session:
        claimed = outbox.claim_due(
            session, MONDAY_9, instance_id="test", limit=20, lease=timedelta(seconds=30)
        )
    assert [row.id for row in claimed] == [prompt_id]
    close_now(session_factory, settings, clock)

    stats = dispatcher.process(prompt_id)
    assert prompt_results(stats) == [(prompt_id, Outcome.CANCELLED)]
    assert [r.reason for r in stats.results] == ["referral closed"]
    assert dm_posts(slack) == []
    assert events(session_factory, "prompt_sent", "prompt_sent_late") == []


def test_a_prompt_whose_send_is_under_way_when_the_referral_closes_is_sent_once_and_recorded(
    session_factory, slack: SlackStandIn, settings: Settings, clock
) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    dispatcher: Dispatcher = make_dispatcher(settings, session_factory, clock, timeout=20)
    # The post passes its claim check, then is held at Slack before it takes effect.
    slack.hold("chat.postMessage", seconds=30)
    done: list[DispatchStats] = []
    sending = threading.Thread(target=lambda: done.append(dispatcher.run_once()))
    sending.start()
    try:
        deadline = time.monotonic() + 15
        while not slack.held() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(h["method"], h["released"]) for h in slack.held()] == [("chat.postMessage", False)]
        close_now(session_factory, settings, clock)
    finally:
        slack.release_holds()
        sending.join(timeout=30)
    [stats] = done

    assert prompt_results(stats) == [(prompt_id, Outcome.DELIVERED)]
    [ts] = dm_posts(slack)
    assert [m["ts"] for m in messages_for(slack, prompt_id)] == [ts]
    row = row_of(session_factory, prompt_id)
    assert (row.state, row.message_ts, row.sent_at, row.last_error) == (
        RowState.SENT,
        ts,
        MONDAY_9,
        None,
    )
    assert [e.event for e in events(session_factory)] == [
        "prompt_cancelled",
        "referral_closed",
        "prompt_sent",
    ]
    [cancelled] = events(session_factory, "prompt_cancelled")
    assert json.loads(cancelled.detail)["in_batch"] is True
    [sent] = events(session_factory, "prompt_sent")
    detail = json.loads(sent.detail)
    assert (sent.recipient, detail["prompt_id"], detail["cancelled_while_sending"]) == (
        "hv-jsmith",
        prompt_id,
        "referral closed",
    )
    # Nothing follows from it: no escalation step, no copy; the target stays cancelled, and the
    # card is redrawn as after the close (in the same pass), once.
    assert kinds_of_rows(session_factory) == [
        (OutboxKind.PROMPT, RowState.SENT),
        (OutboxKind.CARD, RowState.SENT),
    ]
    assert [(r.kind, r.outcome) for r in stats.results] == [
        (OutboxKind.PROMPT, Outcome.DELIVERED),
        (OutboxKind.CARD, Outcome.DELIVERED),
    ]
    assert target_state(session_factory) == "cancelled"
    [card] = slack.messages(EDT)
    assert "(closed)" in json.dumps(card["blocks"])
    assert make_dispatcher(settings, session_factory, clock).run_once().results == []
    assert dm_posts(slack) == [ts]
