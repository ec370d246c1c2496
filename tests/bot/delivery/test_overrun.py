"""Claims that cannot be overrun (docs/timing.md, "Claims"): a dispatcher that froze or waited
past its lease sends nothing; nothing sleeps inside a send (a 429 goes back to the outbox); and
a copy still posted after the claim was lost is deleted when another dispatcher sent the row too.

The freeze is simulated in-process: between the claim check and the post of dispatcher "a",
dispatcher "b" takes the row over (its lease expired). tests/chaos/test_overrun.py does it
with two `handover dispatch` processes and SIGSTOP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from slack_sdk.http_retry import RateLimitErrorRetryHandler, RetryHandler
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.slack import SlackChannel
from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, Outcome, RowState
from bot.delivery.pacing import MESSAGES, Pacer, bucket_name
from bot.delivery.pipeline import RowPipeline
from bot.delivery.results import DispatchStats
from bot.models import OutboxMessage, SlackRateBucket
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from tests.bot.delivery.dispatch_fixtures import (
    MONDAY_9,
    TOKEN,
    events,
    make_dispatcher,
    messages_for,
    setup_one_prompt,
)
from tests.bot.delivery.test_dispatcher import prompt_row

LEASE = timedelta(seconds=30)
JO = "U0HV1"


def claim(factory: sessionmaker[Session], instance_id: str, now=MONDAY_9) -> list[int]:
    with factory.begin() as session:
        return [
            row.id
            for row in outbox.claim_due(
                session, now, instance_id=instance_id, limit=10, lease=LEASE
            )
        ]


def freeze_after_the_check(
    monkeypatch: pytest.MonkeyPatch, instance_id: str, row_id: int, meanwhile: Callable[[], None]
) -> None:
    """`instance_id` passes its claim check on `row_id`, then "freezes": `meanwhile()` runs
    before its post goes out (another dispatcher's work during the freeze), after the check's
    transaction has ended."""
    real_hold, real_send = RowPipeline._hold_claim, SlackChannel.send
    frozen: list[Callable[[], None]] = []
    checked_once: list[bool] = []

    def held(pipeline: RowPipeline, checked: int, conn=None) -> bool:
        still_ours = real_hold(pipeline, checked, conn)
        ours = (pipeline.ctx.instance_id, checked) == (instance_id, row_id)
        if still_ours and ours and not checked_once:
            checked_once.append(True)
            frozen.append(meanwhile)
        return still_ours

    def send(channel: SlackChannel, *args, **kwargs):
        while frozen:
            frozen.pop()()
        return real_send(channel, *args, **kwargs)

    monkeypatch.setattr(RowPipeline, "_hold_claim", held)
    monkeypatch.setattr(SlackChannel, "send", send)


def lose_the_claim_to(factory: sessionmaker[Session], row_id: int, rival: str) -> None:
    """The lease ran out and `rival` claimed the row (it has not sent it yet)."""
    with factory.begin() as session:
        session.get(OutboxMessage, row_id).claimed_until = MONDAY_9 - timedelta(seconds=1)
    assert claim(factory, rival) == [row_id]


def prompt_results(stats: DispatchStats) -> list[tuple[int, Outcome]]:
    """What came of the prompt rows (the card redraws a delivery queues are not counted)."""
    return [(r.row_id, r.outcome) for r in stats.results if r.kind == OutboxKind.PROMPT]


def dm_posts(slack: SlackStandIn) -> list[str]:
    """The ts of every post to Jo Smith's DM, in order."""
    return [c.response["ts"] for c in slack.calls("chat.postMessage") if c.args["channel"] == JO]


# ----- the check before the send ----------------------------------------------------------------


def test_holding_a_claim_renews_only_our_own_in_one_statement(session_factory) -> None:
    prompt_id = setup_one_prompt(session_factory)
    assert claim(session_factory, "a") == [prompt_id]
    later = MONDAY_9 + timedelta(minutes=5)  # our lease ran out, and nobody took the row
    with session_factory.begin() as session:
        held = outbox.hold_claim(session, prompt_id, instance_id="a", now=later, lease=LEASE)
    assert held is True
    assert prompt_row(session_factory, prompt_id).claimed_until == later + LEASE
    with session_factory.begin() as session:
        held = outbox.hold_claim(session, prompt_id, instance_id="b", now=later, lease=LEASE)
    assert held is False
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.claimed_by, row.claimed_until) == (
        RowState.CLAIMED,
        "a",
        later + LEASE,
    )


def test_a_claim_lost_before_the_send_sends_nothing(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    # "a" composed the row (its claim held then), then waited past its lease for a rate token
    # while "b" took the row over: the check just before the post finds the claim lost.
    real_wait = Pacer.wait

    def slow_token(pacer: Pacer, token: str | None, method: str, **guarded) -> float:
        if method == "chat.postMessage":
            lose_the_claim_to(session_factory, prompt_id, "b")
        return real_wait(pacer, token, method, **guarded)

    monkeypatch.setattr(Pacer, "wait", slow_token)
    stats = make_dispatcher(settings, session_factory, clock, "a").run_once()
    monkeypatch.undo()

    assert prompt_results(stats) == [(prompt_id, Outcome.LOST)]
    assert dm_posts(slack) == []
    assert messages_for(slack, prompt_id) == []
    assert events(session_factory, "prompt_sent", "prompt_sent_late") == []
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.claimed_by) == (RowState.CLAIMED, "b")


# ----- no sleep inside a send -------------------------------------------------------------------


def test_a_429_goes_back_to_the_outbox_until_retry_after_without_sleeping(
    session_factory, engine, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = setup_one_prompt(session_factory)

    waits: list[str] = []

    def wait_to_retry(handler: RetryHandler, **kwargs: object) -> None:
        waits.append(type(handler).__name__)  # slack_sdk sleeps here before a retry

    for handler in (RetryHandler, RateLimitErrorRetryHandler):
        monkeypatch.setattr(handler, "prepare_for_next_attempt", wait_to_retry)
    slack.rate_limit_storm("chat.postMessage", retry_after=20)
    before = time.time()
    stats = make_dispatcher(settings, session_factory, clock, "a").run_once()
    after = time.time()
    monkeypatch.undo()

    assert waits == []  # no retry inside the send, so no sleep
    assert [(r.row_id, r.outcome, r.reason) for r in stats.results] == [
        (prompt_id, Outcome.RETRYING, "ratelimited")
    ]
    assert len(slack.calls("chat.postMessage")) == 1  # the 429, not retried
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.attempts, row.next_attempt_at, row.last_error) == (
        RowState.PENDING,
        1,
        MONDAY_9 + timedelta(seconds=20),  # exactly its Retry-After, not the 30 s backoff
        "ratelimited",
    )
    [failed] = events(session_factory, "prompt_failed")
    detail = json.loads(failed.detail)
    assert (detail["reason"], detail["will_retry"], detail["retry_at"]) == (
        "ratelimited",
        True,
        "2027-01-11T09:00:20+00:00",
    )
    # The shared bucket waits out the Retry-After for every dispatcher (pacing.py).
    with engine.connect() as conn:
        bucket = conn.execute(
            select(SlackRateBucket).where(SlackRateBucket.bucket == bucket_name(TOKEN, MESSAGES))
        ).one()
    assert bucket.tokens == 0.0
    assert before + 20 <= bucket.blocked_until <= after + 20


# ----- a copy posted after the claim was lost ---------------------------------------------------


def test_a_late_copy_is_deleted_when_the_row_s_new_holder_sent_it_too(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    frozen = make_dispatcher(settings, session_factory, clock, "a")
    rival = make_dispatcher(settings, session_factory, clock, "b")

    def rival_takes_over_and_sends() -> None:
        lose_the_claim_to(session_factory, prompt_id, "b")
        assert [r.outcome for r in rival.process(prompt_id).results] == [Outcome.DELIVERED]

    freeze_after_the_check(monkeypatch, "a", prompt_id, rival_takes_over_and_sends)
    stats = frozen.run_once()
    monkeypatch.undo()

    assert prompt_results(stats) == [(prompt_id, Outcome.LOST)]
    kept, late = dm_posts(slack)  # "b"'s, then the late one of "a"
    [deleted] = slack.calls("chat.delete")
    assert (deleted.args["ts"], deleted.response["ok"]) == (late, True)
    assert [m["ts"] for m in messages_for(slack, prompt_id)] == [kept]
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.claimed_by, row.message_ts) == (RowState.SENT, "b", kept)
    assert len(events(session_factory, "prompt_sent", "prompt_sent_late")) == 1
    [taken_back] = events(session_factory, "duplicate_deleted")
    assert (taken_back.actor, taken_back.recipient, taken_back.target) == (
        "dispatcher",
        "hv-jsmith",
        "person:hv-jsmith",
    )
    assert json.loads(taken_back.detail) == {
        "kind": "prompt",
        "row_id": prompt_id,
        "channel": deleted.args["channel"],
        "ts": late,
        "kept_ts": kept,
        "dispatcher": "a",
    }


def test_a_late_copy_alone_is_kept_and_found_by_the_row_s_new_holder(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    freeze_after_the_check(
        monkeypatch, "a", prompt_id, lambda: lose_the_claim_to(session_factory, prompt_id, "b")
    )
    stats = make_dispatcher(settings, session_factory, clock, "a").run_once()
    monkeypatch.undo()
    assert prompt_results(stats) == [(prompt_id, Outcome.LOST)]
    [late] = dm_posts(slack)
    assert slack.calls("chat.delete") == []

    # "b" holds the row (claimed as abandoned: it searches first) and finds the late copy.
    result = make_dispatcher(settings, session_factory, clock, "b").process(prompt_id)
    assert [(r.outcome, r.found) for r in result.results] == [(Outcome.DELIVERED, True)]
    assert [m["ts"] for m in messages_for(slack, prompt_id)] == [late]
    assert dm_posts(slack) == [late]
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.message_ts) == (RowState.SENT, late)
    assert events(session_factory, "duplicate_deleted") == []
