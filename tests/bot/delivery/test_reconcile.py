"""A row cancelled while a dispatcher held it, whose dispatcher then died (docs/timing.md,
"Cancelled in a batch"), through the real dispatchers and the Slack stand-in, on both databases.

Dispatcher "dead" claims Jo Smith's prompt, passes its check before the send, and the referral
is closed in that instant; it then dies either after its post reached Slack or before it. Its
death is simulated in-process (as tests/bot/delivery/test_overrun.py freezes one): `Killed`
ends its pass at that point, so it writes nothing more and its heartbeat stops. When its lease
ends, dispatcher "other" looks for the prompt in Jo's DM and records it as sent (once, with why
it was no longer owed, nothing following from it), or settles it cancelled for good.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.email import EmailChannel
from bot.channels.slack import SlackChannel
from bot.db import reading
from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, Outcome, RowState
from bot.delivery.pipeline import RowPipeline
from bot.mail_standin import MailStandIn
from bot.models import OutboxMessage
from bot.services.closing import close_referral
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from rota.models import Person
from tests.bot.delivery.dispatch_fixtures import (
    EDT,
    MONDAY_9,
    REFERRAL_ID,
    add_referral,
    add_rota,
    add_row,
    events,
    make_dispatcher,
    messages_for,
    setup_one_prompt,
    writing_meanwhile,
)
from tests.bot.delivery.test_cancelled_in_batch import (
    CLOSER,
    close_now,
    kinds_of_rows,
    one_prompt_and_a_closer,
    row_of,
    target_state,
)
from tests.bot.delivery.test_overrun import JO, dm_posts, freeze_after_the_check

LEASE_ENDS = MONDAY_9 + timedelta(seconds=30)  # the dead dispatcher's, from its check


class Killed(BaseException):
    """kill -9: the dispatcher's pass ends here, writing nothing more."""


def die_before_confirming(monkeypatch: pytest.MonkeyPatch, instance_id: str) -> None:
    """`instance_id` dies once its posts are in Slack, before it records them."""
    real_confirm = RowPipeline.confirm

    def confirm(pipeline: RowPipeline, posted):
        if pipeline.ctx.instance_id == instance_id and posted:
            raise Killed
        return real_confirm(pipeline, posted)

    monkeypatch.setattr(RowPipeline, "confirm", confirm)


def history_looks(slack: SlackStandIn) -> int:
    return len(slack.calls("conversations.history"))


def sent_after_dying(
    factory: sessionmaker[Session],
    slack: SlackStandIn,
    settings: Settings,
    clock,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str]:
    """The prompt's post reaches Slack after the referral closed under "dead"'s claim, and
    "dead" dies before recording it: the prompt's row id and the post's ts."""
    prompt_id = one_prompt_and_a_closer(factory)
    freeze_after_the_check(
        monkeypatch, "dead", prompt_id, lambda: close_now(factory, settings, clock)
    )
    die_before_confirming(monkeypatch, "dead")
    with pytest.raises(Killed):
        make_dispatcher(settings, factory, clock, name="dead").run_once()
    [ts] = dm_posts(slack)
    row = row_of(factory, prompt_id)
    # Cancelled, its holder's lease still running; the log has only the close.
    assert (row.state, row.claimed_by, row.claimed_until, row.sent_at) == (
        RowState.CANCELLED,
        "dead",
        LEASE_ENDS,
        None,
    )
    assert [e.event for e in events(factory)] == ["prompt_cancelled", "referral_closed"]
    return prompt_id, ts


def test_a_prompt_sent_by_a_dispatcher_that_died_before_recording_it_is_recorded_once(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id, ts = sent_after_dying(session_factory, slack, settings, clock, monkeypatch)
    other = make_dispatcher(settings, session_factory, clock, name="other")

    # Within the dead one's lease nobody looks (it might still be recording the send).
    clock.set(LEASE_ENDS - timedelta(seconds=1))
    before = other.run_once()
    assert [r.kind for r in before.results] == [OutboxKind.CARD]  # the close's redraw
    assert history_looks(slack) == 0

    clock.set(LEASE_ENDS + timedelta(seconds=1))
    stats = other.run_once()
    assert [(r.row_id, r.kind, r.outcome, r.found) for r in stats.results] == [
        (prompt_id, OutboxKind.PROMPT, Outcome.DELIVERED, True),
        (prompt_id + 2, OutboxKind.CARD, Outcome.DELIVERED, False),
    ]
    assert history_looks(slack) == 1
    row = row_of(session_factory, prompt_id)
    [post] = slack.calls("chat.postMessage")[:1]
    assert (row.state, row.message_channel, row.message_ts, row.sent_at, row.claimed_until) == (
        RowState.SENT,
        post.response["channel"],
        ts,
        MONDAY_9,
        None,
    )
    assert [e.event for e in events(session_factory)] == [
        "prompt_cancelled",
        "referral_closed",
        "prompt_sent",
    ]
    [sent] = events(session_factory, "prompt_sent")
    detail = json.loads(sent.detail)
    assert (sent.at, sent.recipient, sent.target) == (MONDAY_9, "hv-jsmith", "person:hv-jsmith")
    assert {
        k: detail[k]
        for k in ("prompt_id", "ts", "cancelled_while_sending", "found_in_history", "sent_at")
    } == {
        "prompt_id": prompt_id,
        "ts": ts,
        "cancelled_while_sending": "referral closed",
        "found_in_history": True,
        "sent_at": "2027-01-11T09:00:00+00:00",  # Monday 09:00, when it went out
    }
    # Nothing follows from it: no escalation step, no re-page; the target stays cancelled.
    assert kinds_of_rows(session_factory) == [
        (OutboxKind.PROMPT, RowState.SENT),
        (OutboxKind.CARD, RowState.SENT),
        (OutboxKind.CARD, RowState.SENT),
    ]
    assert target_state(session_factory) == "cancelled"

    # Never looked at again, by this dispatcher or a third.
    clock.set(LEASE_ENDS + timedelta(minutes=5))
    assert other.run_once().results == []
    assert make_dispatcher(settings, session_factory, clock, name="third").run_once().results == []
    assert history_looks(slack) == 1
    assert dm_posts(slack) == [ts]
    assert len(events(session_factory, "prompt_sent", "prompt_sent_late")) == 1


def test_a_prompt_whose_dispatcher_died_before_posting_it_is_settled_cancelled_and_not_sent(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    real_send = SlackChannel.send

    def send(channel: SlackChannel, address: str, message):
        if message.tag.payload.get("prompt_id") == prompt_id:
            # Past its check; the referral closes; the process dies before its post leaves.
            close_now(session_factory, settings, clock)
            raise Killed
        return real_send(channel, address, message)

    monkeypatch.setattr(SlackChannel, "send", send)
    with pytest.raises(Killed):
        make_dispatcher(settings, session_factory, clock, name="dead").run_once()
    monkeypatch.setattr(SlackChannel, "send", real_send)
    assert row_of(session_factory, prompt_id).claimed_until == LEASE_ENDS

    clock.set(LEASE_ENDS + timedelta(seconds=1))
    other = make_dispatcher(settings, session_factory, clock, name="other")
    stats = other.run_once()
    assert [(r.row_id, r.kind, r.outcome, r.reason) for r in stats.results] == [
        (prompt_id, OutboxKind.PROMPT, Outcome.CANCELLED, "referral closed"),
        (prompt_id + 1, OutboxKind.CARD, Outcome.DELIVERED, None),
    ]
    assert history_looks(slack) == 1
    row = row_of(session_factory, prompt_id)
    assert (row.state, row.claimed_by, row.claimed_until, row.last_error, row.sent_at) == (
        RowState.CANCELLED,
        "dead",
        None,
        "referral closed",
        None,
    )
    assert outbox.dispatch_state(row)["reconciled"] == "not found"
    assert dm_posts(slack) == []
    assert [e.event for e in events(session_factory)] == ["prompt_cancelled", "referral_closed"]

    clock.set(LEASE_ENDS + timedelta(minutes=5))
    assert other.run_once().results == []
    assert make_dispatcher(settings, session_factory, clock, name="third").run_once().results == []
    assert history_looks(slack) == 1
    assert dm_posts(slack) == []


def test_slack_failing_while_it_is_looked_for_is_retried_later_and_then_recorded(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id, ts = sent_after_dying(session_factory, slack, settings, clock, monkeypatch)
    # conversations.history answers 503 to the look and to its two quick retries.
    slack.fail_with_status("conversations.history", 503, count=3)
    clock.set(LEASE_ENDS + timedelta(seconds=1))
    other = make_dispatcher(settings, session_factory, clock, name="other")
    stats = other.run_once()
    retry_at = LEASE_ENDS + timedelta(seconds=31)  # 30 s after the failed look
    assert [
        (r.row_id, r.outcome, r.next_due_at) for r in stats.results if r.row_id == prompt_id
    ] == [(prompt_id, Outcome.RETRYING, retry_at)]
    row = row_of(session_factory, prompt_id)
    assert (row.state, row.claimed_until) == (RowState.CANCELLED, retry_at)
    assert outbox.dispatch_state(row)["reconcile_attempts"] == 1
    assert events(session_factory, "prompt_sent", "prompt_sent_late") == []
    with session_factory() as session:
        assert outbox.next_due_at(session) == retry_at  # the dispatcher wakes for it

    clock.set(retry_at - timedelta(seconds=1))
    assert [r for r in other.run_once().results if r.row_id == prompt_id] == []
    clock.set(retry_at + timedelta(seconds=1))
    assert [(r.row_id, r.outcome, r.found) for r in other.run_once().results][:1] == [
        (prompt_id, Outcome.DELIVERED, True)
    ]
    [sent] = events(session_factory, "prompt_sent")
    assert json.loads(sent.detail)["cancelled_while_sending"] == "referral closed"
    assert row_of(session_factory, prompt_id).state == RowState.SENT
    assert dm_posts(slack) == [ts]


def test_a_row_is_looked_for_by_one_dispatcher_at_a_time(session_factory, clock) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    with session_factory.begin() as session:
        [row] = outbox.claim_due(session, MONDAY_9, instance_id="dead", limit=5)
        outbox.cancel_owed_by(session, row.referral_id)
    later = LEASE_ENDS + timedelta(seconds=1)
    with session_factory.begin() as session:
        mine = outbox.claim_unsettled(session, later, instance_id="a")
        assert mine is not None and mine.id == prompt_id
    with session_factory.begin() as session:
        # Its look has a lease of its own: nobody else takes it meanwhile.
        assert outbox.claim_unsettled(session, later, instance_id="b") is None
        assert outbox.unsettled_held(session, prompt_id, "b") is None
        assert outbox.unsettled_held(session, prompt_id, "a") is not None
    with session_factory.begin() as session:
        # "a" died while looking: after its lease "b" takes the look over, and "a" can no
        # longer settle it.
        theirs = outbox.claim_unsettled(session, later + timedelta(seconds=31), instance_id="b")
        assert theirs is not None and theirs.id == prompt_id
        assert outbox.unsettled_held(session, prompt_id, "a") is None
        held = session.get(OutboxMessage, prompt_id)
        assert (held.state, held.claimed_by) == (RowState.CANCELLED, "dead")


# ----- a send that fails after its row was cancelled -------------------------------------------


def closed_as_the_post_fails(
    factory: sessionmaker[Session],
    settings: Settings,
    clock,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, list]:
    """The prompt passes its check, the referral closes, then its post fails: its id and the
    pass's prompt results."""
    prompt_id = one_prompt_and_a_closer(factory)
    freeze_after_the_check(
        monkeypatch, "test", prompt_id, lambda: close_now(factory, settings, clock)
    )
    stats = make_dispatcher(settings, factory, clock).run_once()
    return prompt_id, [
        (r.row_id, r.outcome, r.reason) for r in stats.results if r.kind == OutboxKind.PROMPT
    ]


def in_slack(slack: SlackStandIn, prompt_id: int) -> list[str]:
    """The ts of each copy of the prompt that is in Slack."""
    return [m["ts"] for m in messages_for(slack, prompt_id)]


def failure_logged(factory: sessionmaker[Session]) -> dict:
    [failed] = events(factory, "prompt_failed")
    assert (failed.recipient, failed.target) == ("hv-jsmith", "person:hv-jsmith")
    return json.loads(failed.detail)


def test_a_send_refused_after_its_row_was_cancelled_counts_cancelled_and_logs_the_failure(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    slack.fail_with_error("chat.postMessage", "msg_too_long")
    prompt_id, results = closed_as_the_post_fails(session_factory, settings, clock, monkeypatch)

    assert results == [(prompt_id, Outcome.CANCELLED, "referral closed")]
    assert in_slack(slack, prompt_id) == []
    assert [e.event for e in events(session_factory)] == [
        "prompt_cancelled",
        "referral_closed",
        "prompt_failed",
    ]
    assert failure_logged(session_factory) == {
        "kind": "prompt",
        "reason": "msg_too_long",
        "attempts": 0,
        "will_retry": False,
        "prompt_id": prompt_id,
        "cancelled_while_sending": "referral closed",
    }
    # No longer owed: nobody is told of the failure, and nobody looks for it later.
    assert kinds_of_rows(session_factory) == [
        (OutboxKind.PROMPT, RowState.CANCELLED),
        (OutboxKind.CARD, RowState.SENT),
    ]
    row = row_of(session_factory, prompt_id)
    assert (row.state, row.claimed_until, row.last_error) == (
        RowState.CANCELLED,
        None,
        "referral closed",
    )
    clock.set(LEASE_ENDS + timedelta(minutes=5))
    assert make_dispatcher(settings, session_factory, clock, "other").run_once().results == []
    assert history_looks(slack) == 0


def test_a_send_that_may_have_gone_out_after_its_row_was_cancelled_is_looked_for_later(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    # The post takes effect, and Slack answers 500: it may have gone out.
    slack.fail_with_status("chat.postMessage", 500, after_apply=True)
    prompt_id, results = closed_as_the_post_fails(session_factory, settings, clock, monkeypatch)

    assert results == [(prompt_id, Outcome.CANCELLED, "referral closed")]
    [ts] = in_slack(slack, prompt_id)
    detail = failure_logged(session_factory)
    assert (detail["will_retry"], detail["cancelled_while_sending"]) == (False, "referral closed")
    assert row_of(session_factory, prompt_id).claimed_until == LEASE_ENDS

    clock.set(LEASE_ENDS + timedelta(seconds=1))
    stats = make_dispatcher(settings, session_factory, clock, "other").run_once()
    assert [(r.row_id, r.outcome, r.found) for r in stats.results][:1] == [
        (prompt_id, Outcome.DELIVERED, True)
    ]
    assert [e.event for e in events(session_factory)] == [
        "prompt_cancelled",
        "referral_closed",
        "prompt_failed",
        "prompt_sent",
    ]
    [sent] = events(session_factory, "prompt_sent")
    assert (json.loads(sent.detail)["ts"], json.loads(sent.detail)["cancelled_while_sending"]) == (
        ts,
        "referral closed",
    )
    assert row_of(session_factory, prompt_id).state == RowState.SENT
    assert in_slack(slack, prompt_id) == [ts]


def test_a_dispatcher_frozen_past_its_lease_still_records_the_send_it_then_makes(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    other = make_dispatcher(settings, session_factory, clock, name="other")
    looked: list = []

    def closed_and_looked_for_while_frozen() -> None:
        close_now(session_factory, settings, clock)
        clock.set(LEASE_ENDS + timedelta(seconds=1))
        looked.extend(other.run_once().results)

    freeze_after_the_check(monkeypatch, "test", prompt_id, closed_and_looked_for_while_frozen)
    stats = make_dispatcher(settings, session_factory, clock).run_once()

    # While "test" was frozen the row was looked for, not found, and settled cancelled; its
    # post then went out, and "test" (still the row's holder) recorded it.
    assert [(r.row_id, r.outcome) for r in looked if r.kind == OutboxKind.PROMPT] == [
        (prompt_id, Outcome.CANCELLED)
    ]
    assert [(r.row_id, r.outcome) for r in stats.results if r.kind == OutboxKind.PROMPT] == [
        (prompt_id, Outcome.DELIVERED)
    ]
    [ts] = in_slack(slack, prompt_id)
    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert (json.loads(sent.detail)["ts"], json.loads(sent.detail)["cancelled_while_sending"]) == (
        ts,
        "referral closed",
    )
    row = row_of(session_factory, prompt_id)
    assert (row.state, row.message_ts) == (RowState.SENT, ts)
    clock.set(LEASE_ENDS + timedelta(minutes=5))
    assert other.run_once().results == []


def test_a_send_that_may_have_gone_out_after_the_row_was_settled_is_looked_for_again(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    other = make_dispatcher(settings, session_factory, clock, name="other")

    def closed_and_looked_for_while_frozen() -> None:
        close_now(session_factory, settings, clock)
        clock.set(LEASE_ENDS + timedelta(seconds=1))
        other.run_once()  # not found: settled cancelled
        # The frozen post then takes effect, and Slack answers 500: it may have gone out.
        slack.fail_with_status("chat.postMessage", 500, after_apply=True)

    freeze_after_the_check(monkeypatch, "test", prompt_id, closed_and_looked_for_while_frozen)
    make_dispatcher(settings, session_factory, clock).run_once()
    [ts] = in_slack(slack, prompt_id)
    assert row_of(session_factory, prompt_id).claimed_until == LEASE_ENDS + timedelta(seconds=1)

    clock.set(LEASE_ENDS + timedelta(seconds=2))
    assert [(r.row_id, r.outcome, r.found) for r in other.run_once().results][:1] == [
        (prompt_id, Outcome.DELIVERED, True)
    ]
    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert json.loads(sent.detail)["ts"] == ts
    assert [e.event for e in events(session_factory)][-2:] == ["prompt_failed", sent.event]


def test_two_dispatchers_looking_at_once_take_a_row_once(session_factory) -> None:
    prompt_id = one_prompt_and_a_closer(session_factory)
    with session_factory.begin() as session:
        outbox.claim_due(session, MONDAY_9, instance_id="dead", limit=5)
        outbox.cancel_owed_by(session, REFERRAL_ID)
    later = LEASE_ENDS + timedelta(seconds=1)
    start = threading.Barrier(2)
    taken: dict[str, int | None] = {}

    def look(name: str) -> None:
        start.wait()
        with session_factory.begin() as session:
            row = outbox.claim_unsettled(session, later, instance_id=name)
            taken[name] = row.id if row is not None else None
            time.sleep(0.2)  # still in its transaction while the other one tries

    threads = [threading.Thread(target=look, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(taken.values(), key=lambda v: v is None) == [prompt_id, None]
    [looking] = [name for name, row_id in taken.items() if row_id is not None]
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert outbox.dispatch_state(row)["reconciling_by"] == looking


# ----- what the look costs a pass with nothing to settle ----------------------------------------


def test_only_a_row_cancelled_under_a_claim_whose_lease_ended_waits_to_be_looked_for(
    session_factory,
) -> None:
    one_prompt_and_a_closer(session_factory)
    after = LEASE_ENDS + timedelta(seconds=1)

    def waiting(at) -> bool:
        with reading(session_factory) as session:
            return outbox.any_unsettled(session, at)

    assert waiting(after) is False  # pending
    with session_factory.begin() as session:
        [row] = outbox.claim_due(session, MONDAY_9, instance_id="dead", limit=5)
    assert waiting(after) is False  # an abandoned claim is taken over, not looked for here
    with session_factory.begin() as session:
        outbox.cancel_owed_by(session, REFERRAL_ID)
    assert (waiting(LEASE_ENDS), waiting(after)) == (False, True)  # from the lease's end
    with session_factory.begin() as session:
        outbox.settle_cancelled(session.get(OutboxMessage, row.id))
    assert waiting(after) is False


def test_a_pass_with_nothing_to_settle_does_not_wait_for_a_writer(
    session_factory, settings: Settings, clock
) -> None:
    setup_one_prompt(session_factory)
    other = make_dispatcher(settings, session_factory, clock, name="other")
    with writing_meanwhile(session_factory):
        # The look only reads: it neither waits for that write nor fails on the lock.
        assert other.reconciler.run() == []


# ----- what follows a send found in Slack --------------------------------------------------------


def edt_card_draws(slack: SlackStandIn) -> list[str]:
    """Each post or update of a message in the EDT channel (the referral's card), by method."""
    return [
        c.method
        for c in slack.calls()
        if c.method in ("chat.postMessage", "chat.update") and c.args.get("channel") == EDT
    ]


def home_redraws(slack: SlackStandIn, user: str) -> int:
    return len([c for c in slack.calls("views.publish") if c.args["user_id"] == user])


def test_a_send_found_in_slack_redraws_the_card_and_the_recipients_home_as_its_sender_would(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    prompt_id, _ = sent_after_dying(session_factory, slack, settings, clock, monkeypatch)
    other = make_dispatcher(settings, session_factory, clock, name="other")
    clock.set(LEASE_ENDS - timedelta(seconds=1))
    other.run_once()  # the close's own redraw of the card: its first post
    assert other.homes.drain(timeout=10)
    assert (edt_card_draws(slack), home_redraws(slack, JO)) == (["chat.postMessage"], 0)
    [card_ts] = [m["ts"] for m in slack.messages(EDT)]

    clock.set(LEASE_ENDS + timedelta(seconds=1))
    stats = other.run_once()
    assert other.homes.drain(timeout=10)
    assert [(r.row_id, r.outcome) for r in stats.results] == [
        (prompt_id, Outcome.DELIVERED),
        (prompt_id + 2, Outcome.DELIVERED),  # the card, redrawn
    ]
    # The card is redrawn in place, and Jo's App Home once, as after a send its sender records.
    assert edt_card_draws(slack) == ["chat.postMessage", "chat.update"]
    [update] = slack.calls("chat.update")
    assert update.args["ts"] == card_ts
    assert home_redraws(slack, JO) == 1
    # Only the views: no reminder or escalation follows a prompt that was no longer owed.
    assert kinds_of_rows(session_factory) == [
        (OutboxKind.PROMPT, RowState.SENT),
        (OutboxKind.CARD, RowState.SENT),
        (OutboxKind.CARD, RowState.SENT),
    ]


def test_a_send_its_sender_records_as_it_is_cancelled_redraws_the_same_views(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    """The reference for the test above: the sender lives and records the send itself."""
    prompt_id = one_prompt_and_a_closer(session_factory)
    freeze_after_the_check(
        monkeypatch, "test", prompt_id, lambda: close_now(session_factory, settings, clock)
    )
    dispatcher = make_dispatcher(settings, session_factory, clock)
    stats = dispatcher.run_once()
    assert dispatcher.homes.drain(timeout=10)
    assert [(r.row_id, r.outcome) for r in stats.results] == [
        (prompt_id, Outcome.DELIVERED),
        (prompt_id + 1, Outcome.DELIVERED),  # the card (the close's redraw and the send's: one)
    ]
    assert (edt_card_draws(slack), home_redraws(slack, JO)) == (["chat.postMessage"], 1)
    assert kinds_of_rows(session_factory) == [
        (OutboxKind.PROMPT, RowState.SENT),
        (OutboxKind.CARD, RowState.SENT),
    ]


# ----- a row that cannot be looked for -----------------------------------------------------------


def outcome_unknown(factory: sessionmaker[Session]) -> tuple:
    """The one `send_outcome_unknown` event: (at, actor, recipient, target, detail)."""
    [event] = events(factory, "send_outcome_unknown")
    return event.at, event.actor, event.recipient, event.target, json.loads(event.detail)


def settled_once_outcome_unknown(
    factory: sessionmaker[Session], prompt_id: int, *, reason: str, channel: str, address: str
) -> None:
    """The row is settled cancelled, and the log says its send's outcome is unknown, once."""
    row = row_of(factory, prompt_id)
    assert (row.state, row.claimed_until, row.sent_at, row.last_error) == (
        RowState.CANCELLED,
        None,
        None,
        "referral closed",
    )
    assert outbox.dispatch_state(row)["reconciled"] == f"outcome unknown: {reason}"
    assert [e.event for e in events(factory)] == [
        "prompt_cancelled",
        "referral_closed",
        "send_outcome_unknown",
    ]
    assert outcome_unknown(factory) == (
        LEASE_ENDS + timedelta(seconds=1),
        "dispatcher",
        "hv-jsmith",
        "person:hv-jsmith",
        {
            "kind": "prompt",
            "row_id": prompt_id,
            "prompt_id": prompt_id,
            "reason": reason,
            "channel": channel,
            "address": address,
            "cancelled_while_sending": "referral closed",
            "attempt_at": "2027-01-11T09:00:00+00:00",  # when the dead dispatcher's began
        },
    )


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("conversations.open", "user_not_found"),  # Jo's account is gone
        ("conversations.open", "user_disabled"),  # deactivated
        ("conversations.history", "channel_not_found"),  # the DM cannot be read
        ("conversations.history", "account_inactive"),  # Jo's, not the bot's (auth.test says)
        # Not among the method's published errors; should Slack answer it, it goes alike.
        ("conversations.history", "is_archived"),
    ],
)
def test_a_conversation_gone_when_the_row_is_looked_for_settles_it_once_outcome_unknown(
    session_factory,
    slack: SlackStandIn,
    settings: Settings,
    clock,
    monkeypatch,
    caplog,
    method: str,
    error: str,
) -> None:
    prompt_id, ts = sent_after_dying(session_factory, slack, settings, clock, monkeypatch)
    slack.fail_with_error(method, error, count=5)  # and to every look that would follow
    clock.set(LEASE_ENDS + timedelta(seconds=1))
    other = make_dispatcher(settings, session_factory, clock, name="other")
    with caplog.at_level(logging.WARNING, logger="bot.delivery.reconcile"):
        stats = other.run_once()

    assert [
        (r.row_id, r.outcome, r.reason) for r in stats.results if r.kind == OutboxKind.PROMPT
    ] == [(prompt_id, Outcome.CANCELLED, "referral closed")]
    settled_once_outcome_unknown(
        session_factory, prompt_id, reason=error, channel="slack", address=JO
    )
    assert [r.getMessage() for r in caplog.records if r.name == "bot.delivery.reconcile"] == [
        f"prompt {prompt_id}, cancelled (referral closed) while a dispatcher that then died held "
        f"it, cannot be looked for in slack ({error}): it may have been sent; settled, its "
        "outcome logged as unknown"
    ]

    # Never asked again, by this dispatcher or a third; nothing is sent again.
    clock.set(LEASE_ENDS + timedelta(minutes=20))
    assert other.run_once().results == []
    assert make_dispatcher(settings, session_factory, clock, name="third").run_once().results == []
    assert len(slack.calls(method)) == 1
    assert len(events(session_factory, "send_outcome_unknown")) == 1
    assert events(session_factory, "prompt_sent", "prompt_sent_late", "prompt_failed") == []
    assert dm_posts(slack) == [ts]


JO_EMAIL = "hv-jsmith@example.org"
PUBLIC_URL = "https://handover.wexcombe.example"


def by_email(settings: Settings, relay: MailStandIn) -> Settings:
    return dataclasses.replace(
        settings,
        slack_signing_secret="signing-secret-of-the-test-app",
        smtp_url=relay.url,
        mail_from="Handover <handover@wexcombe.example>",
        public_url=PUBLIC_URL,
    )


@pytest.mark.parametrize("posted", [True, False], ids=["emailed", "died-before-emailing"])
@pytest.mark.parametrize("looker_has_email", [True, False], ids=["smtp", "smtp-removed"])
def test_an_email_whose_sender_died_as_it_was_cancelled_is_logged_outcome_unknown(
    session_factory,
    slack: SlackStandIn,
    relay: MailStandIn,
    settings: Settings,
    clock,
    monkeypatch,
    posted: bool,
    looker_has_email: bool,
) -> None:
    """A relay cannot be asked what it took: the log must not imply it was not sent."""
    emailing = by_email(settings, relay)
    prompt_id = one_prompt_and_a_closer(session_factory)
    with session_factory.begin() as session:
        session.get(Person, "hv-jsmith").contact = "email"
    real_send = EmailChannel.send

    def send(channel: EmailChannel, address: str, message):
        # Past its check; the referral closes; the email goes (or the process dies first).
        close_now(session_factory, emailing, clock)
        if not posted:
            raise Killed
        return real_send(channel, address, message)

    monkeypatch.setattr(EmailChannel, "send", send)
    die_before_confirming(monkeypatch, "dead")
    with pytest.raises(Killed):
        make_dispatcher(emailing, session_factory, clock, name="dead").run_once()
    monkeypatch.setattr(EmailChannel, "send", real_send)
    assert len(relay.messages(to=JO_EMAIL)) == (1 if posted else 0)
    assert row_of(session_factory, prompt_id).claimed_until == LEASE_ENDS

    clock.set(LEASE_ENDS + timedelta(seconds=1))
    looker = emailing if looker_has_email else settings
    other = make_dispatcher(looker, session_factory, clock, name="other")
    stats = other.run_once()
    assert [
        (r.row_id, r.outcome, r.reason) for r in stats.results if r.kind == OutboxKind.PROMPT
    ] == [(prompt_id, Outcome.CANCELLED, "referral closed")]
    settled_once_outcome_unknown(
        session_factory,
        prompt_id,
        reason="cannot_search" if looker_has_email else "channel_not_configured",
        channel="email",
        address=JO_EMAIL,
    )
    clock.set(LEASE_ENDS + timedelta(minutes=20))
    assert other.run_once().results == []
    # Not sent again, nothing asked of Slack about it, logged once.
    assert len(relay.messages(to=JO_EMAIL)) == (1 if posted else 0)
    assert history_looks(slack) == 0
    assert len(events(session_factory, "send_outcome_unknown")) == 1


def test_a_post_to_a_channel_gone_when_it_is_looked_for_is_settled_once_outcome_unknown(
    session_factory, slack: SlackStandIn, settings: Settings, clock, monkeypatch
) -> None:
    """A room's post, not a DM: an on-call alert nobody holds goes to the EDT channel."""
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        session.get(Person, "edt-mgr").permissions = "oversight"
        role = {"role": "role:edt_manager", "detail": "nobody on call as edt_manager"}
        alert_id = add_row(session, OutboxKind.ON_CALL, detail=json.dumps(role)).id

    def close() -> None:
        with session_factory.begin() as session:
            close_referral(
                session,
                REFERRAL_ID,
                CLOSER,
                "Family moved away",
                now=clock.now(),
                settings=settings,
            )

    freeze_after_the_check(monkeypatch, "dead", alert_id, close)
    die_before_confirming(monkeypatch, "dead")
    with pytest.raises(Killed):
        make_dispatcher(settings, session_factory, clock, name="dead").run_once()
    [posted] = [m for m in slack.messages(EDT) if m["metadata"]["event_type"] == "handover_alert"]
    slack.fail_with_error("conversations.history", "channel_not_found", count=5)

    clock.set(LEASE_ENDS + timedelta(seconds=1))
    other = make_dispatcher(settings, session_factory, clock, name="other")
    assert [(r.row_id, r.kind, r.outcome) for r in other.run_once().results] == [
        (alert_id, OutboxKind.ON_CALL, Outcome.CANCELLED),
        (alert_id + 1, OutboxKind.CARD, Outcome.DELIVERED),  # the close's redraw
    ]
    assert [e.event for e in events(session_factory)] == [
        "referral_closed",
        "send_outcome_unknown",
    ]
    assert outcome_unknown(session_factory) == (
        LEASE_ENDS + timedelta(seconds=1),
        "dispatcher",
        EDT,
        "role:edt_manager",
        {
            "kind": "on_call",
            "row_id": alert_id,
            "reason": "channel_not_found",
            "channel": "slack",
            "address": EDT,
            "cancelled_while_sending": "referral closed",
            "attempt_at": "2027-01-11T09:00:00+00:00",
        },
    )
    clock.set(LEASE_ENDS + timedelta(minutes=20))
    assert other.run_once().results == []
    assert history_looks(slack) == 1
    assert [m["ts"] for m in slack.messages(EDT) if m["ts"] == posted["ts"]] == [posted["ts"]]
