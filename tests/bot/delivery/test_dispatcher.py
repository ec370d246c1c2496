"""The dispatcher against the local Slack stand-in: on time, late, exactly once, never dropped."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from slack_sdk.web import SlackResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FileClock, FixedClock
from bot.delivery import outbox, pipeline
from bot.delivery.dispatcher import Dispatcher, DispatchStats
from bot.delivery.kinds import OutboxKind, Outcome, RowState
from bot.models import AuditEvent, OutboxMessage, Referral, Target
from bot.services.audit import verify_chain
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from handlers.blocks.prompt import build_prompt_message
from rota.models import Person
from tests.bot.delivery.dispatch_fixtures import (
    EDT,
    MONDAY_9,
    TOKEN,
    add_person,
    add_prompt_for,
    add_referral,
    add_rota,
    add_row,
    events,
    is_prompt,
    make_dispatcher,
    messages_for,
    run_until_quiet,
    setup_one_prompt,
)
from tests.rota.factories import add_absence

LONDON = ZoneInfo("Europe/London")
ROOT = Path(__file__).resolve().parents[3]


# ----- helpers ----------------------------------------------------------------------------------


def post_prompt_to_jo(slack: SlackStandIn, prompt_id: int) -> SlackResponse:
    """Post the prompt to Jo Smith as a dispatcher would, behind the outbox's back."""
    return WebClient(base_url=slack.url, token=TOKEN).chat_postMessage(
        channel="U0HV1",
        text="Handover referral HO-K7M3QX: please respond",
        metadata={
            "event_type": "handover_prompt",
            "event_payload": {"referral_id": "HO-K7M3QX", "prompt_id": prompt_id},
        },
    )


def prompt_row(factory: sessionmaker[Session], prompt_id: int) -> OutboxMessage:
    with factory() as session:
        return session.get(OutboxMessage, prompt_id)


# ----- on time, and never early ------------------------------------------------------------------


def test_nothing_is_sent_before_due_then_exactly_at_due(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)

    clock.set(MONDAY_9 - timedelta(seconds=1))
    assert dispatcher.run_once().sent == 0
    assert slack.calls("chat.postMessage") == []

    clock.set(MONDAY_9)
    stats = dispatcher.run_once()
    assert (stats.sent, stats.late, stats.cards) == (1, 0, 1)  # and the EDT card showing it

    [message] = slack.messages(slack.dm_channel_for("U0HV1"))
    assert message["metadata"] == {
        "event_type": "handover_prompt",
        "event_payload": {"referral_id": "HO-K7M3QX", "prompt_id": prompt_id},
    }
    assert message["text"] == "Handover referral HO-K7M3QX: please respond"
    with session_factory() as session:
        referral = session.get(Referral, "HO-K7M3QX")
        expected = build_prompt_message(
            referral,
            prompt_id,
            due_at=MONDAY_9,
            respond_by=datetime(2027, 1, 11, 17, 0, tzinfo=UTC),  # end of Jo's working day
            tz=LONDON,
            via="self",
            target="person:hv-jsmith",
            steps=[
                ("remind", datetime(2027, 1, 11, 10, 0, tzinfo=UTC)),
                ("escalate", datetime(2027, 1, 11, 11, 0, tzinfo=UTC)),
                ("escalate_channel", datetime(2027, 1, 11, 13, 0, tzinfo=UTC)),
                ("breach", datetime(2027, 1, 11, 17, 0, tzinfo=UTC)),
            ],
        )
        assert message["blocks"] == expected["blocks"]
        [call] = [c for c in slack.calls("chat.postMessage") if c.args["channel"] != EDT]
        assert call.args["channel"] == "U0HV1"  # a DM: the user ID, no conversations.open

        row = session.get(OutboxMessage, prompt_id)
        assert (row.state, row.recipient_id, row.sent_at, row.late) == (
            RowState.SENT,
            "hv-jsmith",
            MONDAY_9,
            False,
        )
        assert (row.message_channel, row.message_ts) == (message["channel"], message["ts"])
        assert session.get(Target, row.target_id).state == "prompted"

    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert (sent.event, sent.recipient, sent.target, sent.at) == (
        "prompt_sent",
        "hv-jsmith",
        "person:hv-jsmith",
        MONDAY_9,
    )
    detail = json.loads(sent.detail)
    assert detail["via"] == "self" and detail["due_at"] == "2027-01-11T09:00:00+00:00"
    assert detail["ts"] == message["ts"] and sent.rota_version == 1


def test_a_prompt_first_dispatched_at_1130_is_logged_late(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    clock.set(datetime(2027, 1, 11, 11, 30, tzinfo=UTC))
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert (stats.sent, stats.late) == (1, 1)
    assert len(messages_for(slack, prompt_id)) == 1
    assert events(session_factory, "prompt_sent") == []
    [late] = events(session_factory, "prompt_sent_late")
    detail = json.loads(late.detail)
    assert detail["due_at"] == "2027-01-11T09:00:00+00:00"
    assert detail["sent_at"] == "2027-01-11T11:30:00+00:00"
    assert detail["delay_minutes"] == 150
    assert prompt_row(session_factory, prompt_id).late is True


def test_nobody_at_work_any_more_reschedules_to_the_chains_next_start(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    with session_factory.begin() as session:  # the rota changed: Jo is off on Monday
        add_absence(session, "hv-jsmith", MONDAY_9.date(), MONDAY_9.date())
    dispatcher = make_dispatcher(settings, session_factory, clock)
    stats = dispatcher.run_once()
    assert (stats.sent, stats.rescheduled) == (0, 1)
    assert [c.args["channel"] for c in slack.calls("chat.postMessage")] == [EDT]  # the card
    tuesday_9 = MONDAY_9 + timedelta(days=1)
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.due_at) == (RowState.PENDING, tuesday_9)
    [scheduled] = events(session_factory, "prompt_scheduled")
    assert json.loads(scheduled.detail)["rescheduled"] is True
    assert json.loads(scheduled.detail)["due_at"] == "2027-01-12T09:00:00+00:00"

    clock.set(tuesday_9)
    assert dispatcher.run_once().sent == 1
    assert len(messages_for(slack, prompt_id)) == 1
    assert [e.event for e in events(session_factory, "prompt_sent", "prompt_sent_late")] == [
        "prompt_sent"
    ]


# ----- exactly once ------------------------------------------------------------------------------


def test_a_claimed_but_unconfirmed_prompt_is_found_in_history_not_sent_again(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    # A dispatcher claims the prompt, posts it, and dies before confirming.
    with session_factory.begin() as session:
        [claimed] = outbox.claim_due(
            session, MONDAY_9, instance_id="dead", limit=10, lease=timedelta(minutes=10)
        )
        assert claimed.id == prompt_id
    posted = post_prompt_to_jo(slack, prompt_id)
    assert prompt_row(session_factory, prompt_id).state == RowState.CLAIMED

    dispatcher = make_dispatcher(settings, session_factory, clock, "survivor")
    assert dispatcher.run_once().sent == 0  # the lease still runs: hands off

    clock.set(MONDAY_9 + timedelta(minutes=10, seconds=1))
    stats = dispatcher.run_once()
    assert (stats.sent, stats.found_in_history) == (1, 1)
    dm_posts = [c for c in slack.calls("chat.postMessage") if c.args["channel"] != EDT]
    assert len(dm_posts) == 1  # only the dead dispatcher's post
    assert len(messages_for(slack, prompt_id)) == 1
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.message_ts, row.claimed_by) == (RowState.SENT, posted["ts"], "survivor")
    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert json.loads(sent.detail)["found_in_history"] is True
    history = slack.calls("conversations.history")
    assert history and history[0].args["include_all_metadata"] in (True, "true", "1")


def test_a_prompt_found_in_history_is_logged_as_sent_at_its_first_claim(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    # 09:00: a dispatcher claims the prompt, Slack stores it, and the dispatcher dies.
    with session_factory.begin() as session:
        outbox.claim_due(session, MONDAY_9, instance_id="dead", limit=10)
    post_prompt_to_jo(slack, prompt_id)

    # 09:11: the survivor finds it; Jo has had it since 09:00, which the log and clock say.
    clock.set(MONDAY_9 + timedelta(minutes=11))
    stats = make_dispatcher(settings, session_factory, clock, "survivor").run_once()
    assert (stats.sent, stats.late, stats.found_in_history) == (1, 0, 1)
    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert (sent.event, sent.at) == ("prompt_sent", MONDAY_9)
    detail = json.loads(sent.detail)
    assert (detail["sent_at"], detail["found_at"], detail["found_in_history"]) == (
        "2027-01-11T09:00:00+00:00",
        "2027-01-11T09:11:00+00:00",
        True,
    )
    assert "delay_minutes" not in detail
    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.sent_at, row.late) == (RowState.SENT, MONDAY_9, False)
    # The escalation clock started at 09:00: the reminder is due at 10:00, not 10:11.
    with session_factory() as session:
        [reminder] = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "escalation")
        )
        assert (outbox.load_detail(reminder)["step"], reminder.due_at) == (
            "remind",
            MONDAY_9 + timedelta(hours=1),
        )


def test_a_rescheduled_prompt_found_in_history_is_dated_at_its_new_due_time_not_its_first_claim(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    with session_factory.begin() as session:  # Jo is off on Monday: held until Tuesday 09:00
        add_absence(session, "hv-jsmith", MONDAY_9.date(), MONDAY_9.date())
    dispatcher = make_dispatcher(settings, session_factory, clock)
    assert dispatcher.run_once().rescheduled == 1  # first claimed on Monday at 09:00

    tuesday_9 = MONDAY_9 + timedelta(days=1)
    clock.set(tuesday_9)
    slack.fail_with_status("chat.postMessage", 500, after_apply=True)
    assert dispatcher.run_once().retrying == 1
    clock.set(tuesday_9 + timedelta(minutes=5))
    assert dispatcher.run_once().found_in_history == 1

    assert len(messages_for(slack, prompt_id)) == 1
    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert (sent.event, sent.at, json.loads(sent.detail)["sent_at"]) == (
        "prompt_sent",
        tuesday_9,
        "2027-01-12T09:00:00+00:00",
    )
    assert prompt_row(session_factory, prompt_id).sent_at == tuesday_9


def test_a_prompt_found_in_history_is_dated_by_the_attempt_that_posted_it_not_the_first(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    # 09:00: Slack is down; nothing reaches it, but the failure is ambiguous.
    slack.fail_with_status("chat.postMessage", 503, count=10)
    assert dispatcher.run_once().retrying == 1
    assert messages_for(slack, prompt_id) == []
    slack.clear_faults()

    # 10:43: Slack stores the prompt, but the answer is lost.
    clock.set(MONDAY_9 + timedelta(minutes=103))
    slack.fail_with_status("chat.postMessage", 500, after_apply=True)
    assert dispatcher.run_once().retrying == 1
    assert len(messages_for(slack, prompt_id)) == 1

    # 10:50: found in history. Jo has had it since 10:43, not since 09:00: it was late.
    clock.set(MONDAY_9 + timedelta(minutes=110))
    stats = dispatcher.run_once()
    assert (stats.found_in_history, stats.late) == (1, 1)
    assert len(messages_for(slack, prompt_id)) == 1
    [sent] = events(session_factory, "prompt_sent", "prompt_sent_late")
    assert (sent.event, sent.at) == ("prompt_sent_late", MONDAY_9 + timedelta(minutes=103))
    assert prompt_row(session_factory, prompt_id).sent_at == MONDAY_9 + timedelta(minutes=103)


def test_an_on_call_alert_posted_then_failed_is_found_by_its_own_event_type(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        detail = json.dumps({"role": "role:edt_manager"})
        alert_id = add_row(session, "on_call", recipient_id="edt-mgr", detail=detail).id
    slack.fail_with_status("chat.postMessage", 500, after_apply=True)
    stats = run_until_quiet(make_dispatcher(settings, session_factory, clock), clock)
    assert (stats.alerts, stats.found_in_history) == (1, 1)

    # (Nobody acknowledges it, so it is re-paged later: that DM is its own row's.)
    [message] = [
        m
        for m in slack.messages(slack.dm_channel_for("U0MGR"))
        if m["metadata"]["event_payload"]["kind"] == "on_call"
    ]
    assert message["metadata"] == {
        "event_type": "handover_alert",
        "event_payload": {"referral_id": "HO-K7M3QX", "kind": "on_call", "row_id": alert_id},
    }
    [lookup] = slack.calls("conversations.history")
    assert lookup.args["channel"] == message["channel"]
    [alerted] = events(session_factory, "on_call_alerted")
    assert (alerted.at, json.loads(alerted.detail)["found_in_history"]) == (MONDAY_9, True)


@pytest.mark.parametrize("fault", ["http_500", "timeout"])
def test_a_post_applied_then_failed_is_not_duplicated(
    fault: str, session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    prompt_id = setup_one_prompt(session_factory)
    if fault == "http_500":
        slack.fail_with_status("chat.postMessage", 500, after_apply=True)
    else:
        slack.hang("chat.postMessage", 3, after_apply=True)  # outlasts the 2 s client timeout
    dispatcher = make_dispatcher(settings, session_factory, clock)

    stats = dispatcher.run_once()
    assert (stats.sent, stats.retrying) == (0, 1)
    assert len(messages_for(slack, prompt_id)) == 1  # Slack stored it anyway
    row = prompt_row(session_factory, prompt_id)
    assert row.state == RowState.PENDING and outbox.needs_check(row)
    assert row.next_attempt_at == MONDAY_9 + timedelta(seconds=30)
    [failed] = events(session_factory, "prompt_failed")
    assert json.loads(failed.detail)["will_retry"] is True

    run_until_quiet(dispatcher, clock)
    assert len(messages_for(slack, prompt_id)) == 1
    prompt_posts = [
        c
        for c in slack.calls("chat.postMessage")
        if "handover_prompt" in str(c.args.get("metadata"))
    ]
    assert len(prompt_posts) == 1
    assert prompt_row(session_factory, prompt_id).state == RowState.SENT
    assert len(events(session_factory, "prompt_sent", "prompt_sent_late")) == 1


def test_rate_limit_storms_and_server_errors_deliver_everything_once(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    people = [f"p{i}" for i in range(6)]
    slack.add_users(StandInUser(id=f"U0P{i}", name=f"p{i}") for i in range(6))
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        for i, person in enumerate(people):
            add_person(session, person, f"Person {i}", f"U0P{i}")
        ids = [add_prompt_for(session, p, position=i) for i, p in enumerate(people)]
    slack.rate_limit_storm("chat.postMessage", count=1, retry_after=1)
    slack.fail_with_status("chat.postMessage", 503, count=2)
    slack.fail_with_status("conversations.history", 500, count=1)  # retried by the client
    slack.fail_with_status("chat.postMessage", 500, count=1, after_apply=True)

    stats = run_until_quiet(make_dispatcher(settings, session_factory, clock), clock)
    assert stats.sent == 6
    assert {pid: len(messages_for(slack, pid)) for pid in ids} == dict.fromkeys(ids, 1)
    with session_factory() as session:
        states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(ids))).all()
    assert set(states) == {RowState.SENT}
    assert len(events(session_factory, "prompt_sent", "prompt_sent_late")) == 6


def _many_prompts(factory: sessionmaker[Session], slack: SlackStandIn, count: int) -> list[int]:
    slack.set_rate_limit(None)
    slack.add_users(StandInUser(id=f"U1{i:05d}", name=f"m{i}") for i in range(count))
    with factory.begin() as session:
        add_rota(session)
        for r in range(count // 10):
            add_referral(session, f"HO-M{r:05d}")
        for i in range(count):
            add_person(session, f"m{i}", f"Member {i}", f"U1{i:05d}")
        session.flush()
        return [
            add_prompt_for(session, f"m{i}", referral_id=f"HO-M{i // 10:05d}", position=i % 10)
            for i in range(count)
        ]


def _assert_each_sent_once(factory: sessionmaker[Session], slack: SlackStandIn, ids) -> None:
    counts = Counter(
        m["metadata"]["event_payload"]["prompt_id"] for m in slack.messages() if is_prompt(m)
    )
    assert {pid: counts[pid] for pid in ids} == dict.fromkeys(ids, 1)
    with factory() as session:
        states = Counter(
            session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(ids)))
        )
    assert states == Counter({RowState.SENT: len(ids)})
    assert len(events(factory, "prompt_sent", "prompt_sent_late")) == len(ids)


def test_two_dispatchers_in_threads_send_100_prompts_exactly_once(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    # Five batches of 20 for the two threads to race for: the claims meet as they would over
    # fifteen. The high-volume count is the two processes' below (300 prompts).
    # The guarantee is each prompt sent once: in the pass or, when its send or a transaction
    # failed there (on a starved machine, the 2 s Slack timeout or the 3 s lock timeout: one
    # run in about 30 sent 99 in the pass), at its retry 30 s later (docs/timing.md), never
    # lost between the two. So each prompt comes to an outcome in the pass, delivered or
    # released for its retry (any other fails the test, the outcomes shown); the first post
    # (a prompt: cards follow their batch) fails, so that a retry is always among them.
    ids = _many_prompts(session_factory, slack, 100)
    slack.fail_with_status("chat.postMessage", 500, count=1)
    dispatchers = [make_dispatcher(settings, session_factory, clock, f"t{i}") for i in (1, 2)]
    results: dict[str, DispatchStats] = {}
    errors: list[BaseException] = []

    def run(d: Dispatcher) -> None:
        try:
            results[d.instance_id] = d.run_once()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(s.sent > 0 for s in results.values())  # both did part of the work
    outcomes = {
        r.row_id: (r.outcome, r.reason)
        for s in results.values()
        for r in s.results
        if r.kind == OutboxKind.PROMPT
    }
    # Each prompt claimed and settled once, by one of the two.
    assert sorted(outcomes) == sorted(ids)
    retried = {i: o for i, o in outcomes.items() if o[0] is not Outcome.DELIVERED}
    assert all(outcome is Outcome.RETRYING for outcome, _ in retried.values()), retried
    assert (Outcome.RETRYING, "http_500") in retried.values()
    sent = sum(s.sent for s in results.values())
    assert sent == 100 - len(retried)
    clock.set(MONDAY_9 + timedelta(seconds=31))  # past the first retry (and a lease)
    assert sent + dispatchers[0].run_once().sent == 100, retried
    _assert_each_sent_once(session_factory, slack, ids)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # several instances need PG
def test_two_dispatch_processes_send_300_prompts_exactly_once(
    db_url: str, session_factory, slack: SlackStandIn, clock: FixedClock, tmp_path: Path
) -> None:
    ids = _many_prompts(session_factory, slack, 300)
    clock_file = tmp_path / "clock"
    clock_file.write_text(MONDAY_9.isoformat())
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "SLACK_API_URL": slack.url,
        "SLACK_BOT_TOKEN": TOKEN,
        "HANDOVER_CLOCK_FILE": str(clock_file),
        "HANDOVER_EDT_CHANNEL": EDT,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bot", "dispatch", "--once"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert out.startswith("dispatch: ")
    assert FileClock(str(clock_file)).now() == MONDAY_9
    _assert_each_sent_once(session_factory, slack, ids)


# ----- failures: never dropped, always visible ---------------------------------------------------


def test_user_not_found_passes_them_over_and_with_nobody_else_alerts_the_edt_channel(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    # Jo Smith's chain has nobody else, and nobody is on call: the EDT channel hears of both
    # the person nobody could reach and the target nobody is left to answer.
    prompt_id = setup_one_prompt(session_factory)
    slack.fail_with_error("chat.postMessage", "user_not_found")
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert stats.failed == 1

    row = prompt_row(session_factory, prompt_id)
    assert (row.state, row.last_error) == (RowState.FAILED, "unroutable")
    assert outbox.passed_over(row) == {"hv-jsmith": "user_not_found"}
    with session_factory() as session:
        assert session.get(Target, row.target_id).state == "unroutable"
    [unreachable] = events(session_factory, "unreachable")
    assert (unreachable.recipient, unreachable.target) == ("hv-jsmith", "person:hv-jsmith")
    assert json.loads(unreachable.detail) == {
        "reason": "user_not_found",
        "channels": ["slack"],
        "prompt_id": prompt_id,
        "alerted": [EDT],
        "instead": "unroutable",
    }
    [unroutable] = events(session_factory, "unroutable")
    assert json.loads(unroutable.detail)["reason"] == (
        "nobody else in the chain can be reached; could not reach hv-jsmith (user_not_found)"
    )
    assert events(session_factory, "prompt_rerouted", "prompt_failed") == []

    alerts = [m for m in slack.messages(EDT) if m["metadata"]["event_type"] == "handover_alert"]
    assert [a["metadata"]["event_payload"]["kind"] for a in alerts] == [
        "unreachable",
        "unroutable",
    ]
    text = json.dumps(alerts[0])
    assert alerts[0]["text"] == "Handover referral HO-K7M3QX: someone could not be reached"
    assert "`hv-jsmith` could not be reached by Slack for target `person:hv-jsmith`" in text
    assert "Nobody else in its chain can be reached" in text
    assert "Jo Smith" not in text and "jo.smith" not in text  # the person_id, not their details


def test_a_revoked_token_loses_nothing_and_sends_after_the_fix(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock, caplog
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        first = add_prompt_for(session, "hv-jsmith")
        second = add_prompt_for(session, "gp-lee", position=1)
    slack.revoke_token(TOKEN)
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert stats.sent == 0 and stats.failed == 0
    assert "SLACK REFUSED THE BOT TOKEN (token_revoked)" in caplog.text
    assert slack.messages() == []
    for prompt_id in (first, second):
        assert prompt_row(session_factory, prompt_id).state == RowState.PENDING  # nothing dropped
    assert prompt_row(session_factory, first).last_error == "token_revoked"
    # One attempt, then the rest of the batch waits instead of hammering Slack.
    assert len([c for c in slack.calls("chat.postMessage") if c.args["channel"] != EDT]) == 1
    assert [c.args["channel"] for c in slack.calls("chat.postMessage")][-1] == EDT  # alert tried

    fixed = dataclasses.replace(settings, slack_bot_token="xoxb-rotated")
    stats = run_until_quiet(make_dispatcher(fixed, session_factory, clock), clock)
    assert stats.sent == 2
    assert len(messages_for(slack, first)) == 1 and len(messages_for(slack, second)) == 1


# ----- other kinds: on call, card, email lookup --------------------------------------------------


def test_on_call_alert_goes_to_the_holder_and_is_logged(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        add_row(
            session,
            "on_call",
            recipient_id="edt-mgr",
            detail=json.dumps({"role": "role:edt_manager", "detail": "on call as edt_manager"}),
        )
    assert make_dispatcher(settings, session_factory, clock).run_once().alerts == 1
    [message] = slack.messages(slack.dm_channel_for("U0MGR"))
    with session_factory() as session:
        row_id = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.kind == "on_call")
        ).one()
    assert message["metadata"] == {
        "event_type": "handover_alert",
        "event_payload": {"referral_id": "HO-K7M3QX", "kind": "on_call", "row_id": row_id},
    }
    assert message["text"] == "Handover referral HO-K7M3QX: new referral (on call)"
    [alerted] = events(session_factory, "on_call_alerted")
    assert (alerted.recipient, alerted.target) == ("edt-mgr", "role:edt_manager")


def test_card_is_posted_once_then_updated_as_targets_change(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        add_row(session, "card", address=EDT)
        session.flush()
        add_prompt_for(session, "hv-jsmith")
        add_prompt_for(session, "gp-lee", MONDAY_9 + timedelta(days=1), position=1)
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert (stats.sent, stats.cards) == (1, 2)  # the prompt; the card posted, then updated

    [card] = slack.messages(EDT)
    with session_factory() as session:
        first_card_row = session.scalars(
            select(OutboxMessage.id)
            .where(OutboxMessage.kind == "card")
            .order_by(OutboxMessage.id)
            .limit(1)
        ).one()
    assert card["metadata"] == {
        "event_type": "handover_card",
        "event_payload": {"referral_id": "HO-K7M3QX", "row_id": first_card_row},
    }
    with session_factory() as session:
        referral = session.get(Referral, "HO-K7M3QX")
        assert (referral.card_channel, referral.card_ts) == (EDT, card["ts"])
    [update] = slack.calls("chat.update")
    assert update.args["ts"] == card["ts"]
    text = json.dumps(card["blocks"])
    assert "`person:hv-jsmith`: prompted <@U0HV1>" in text
    assert "`person:gp-lee`: held until Tue 12 Jan 2027 09:00 GMT" in text


def test_a_person_without_slack_id_is_looked_up_by_email_once(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        add_referral(session, "HO-SECOND")
        first = add_prompt_for(session, "gp-lee")
        second = add_prompt_for(session, "gp-lee", referral_id="HO-SECOND")
    assert make_dispatcher(settings, session_factory, clock).run_once().sent == 2
    assert len(slack.calls("users.lookupByEmail")) == 1
    with session_factory() as session:
        assert session.get(Person, "gp-lee").slack_user_found == "U0GP1"
    dm = slack.dm_channel_for("U0GP1")
    assert [m["channel"] for m in messages_for(slack, first) + messages_for(slack, second)] == [
        dm,
        dm,
    ]


def test_the_recipients_app_home_is_refreshed_once_the_prompt_is_delivered(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        add_prompt_for(session, "hv-jsmith")
        add_row(
            session,
            "on_call",
            recipient_id="edt-mgr",
            detail=json.dumps({"role": "role:edt_manager"}),
        )
    dispatcher = make_dispatcher(settings, session_factory, clock)
    stats = dispatcher.run_once()
    assert (stats.sent, stats.alerts) == (1, 1)
    assert dispatcher.homes.drain(timeout=10)  # redrawn on a thread of their own
    # Jo's Home, and only Jo's: an alert is not a prompt of the manager's own.
    [publish] = slack.calls("views.publish")
    assert publish.args["user_id"] == "U0HV1"
    assert publish.response["ok"] is True
    assert "HO-K7M3QX" in json.dumps(publish.args["view"])


def test_a_failed_home_refresh_does_not_fail_the_delivery(
    session_factory,
    slack: SlackStandIn,
    settings: Settings,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prompt_id = setup_one_prompt(session_factory)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database gone away")

    monkeypatch.setattr("bot.delivery.home.refresh_homes", broken)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    stats = dispatcher.run_once()
    assert dispatcher.homes.drain(timeout=10)
    assert (stats.sent, stats.retrying, stats.failed) == (1, 0, 0)
    assert prompt_row(session_factory, prompt_id).state == RowState.SENT
    assert len(messages_for(slack, prompt_id)) == 1
    assert events(session_factory, "prompt_failed") == []
    assert "could not refresh the App Home of U0HV1" in caplog.text


class _HeldPacer:
    """A pacer whose views.publish token is handed out only when the test says."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.release = threading.Event()

    def wait(self, token: str | None, method: str) -> float:
        self.waiting.set()
        assert self.release.wait(10)
        return 0.0


def _home_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "home-refreshes"}


def test_a_dispatchers_shutdown_ends_its_home_redraws_thread(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    # `handover dispatch` on SIGTERM and `serve` shut the dispatcher down, then close the
    # engine: the redraws' thread, idle for a minute after its last redraw, outlived both.
    setup_one_prompt(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    before = _home_threads()
    assert dispatcher.run_once().sent == 1
    assert dispatcher.homes.drain(timeout=10)
    [thread] = _home_threads() - before
    dispatcher.shutdown()
    assert not thread.is_alive()
    dispatcher.homes.request(dispatcher.channels.for_rooms().client, ["U0HV1"])  # too late
    assert len(slack.calls("views.publish")) == 1  # Jo's, before the shutdown
    assert _home_threads() <= before


def test_a_home_redraw_waiting_for_its_token_at_the_stop_publishes_nothing(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    setup_one_prompt(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    pacer = _HeldPacer()
    dispatcher.homes.pacer = pacer
    before = _home_threads()
    assert dispatcher.run_once().sent == 1
    assert pacer.waiting.wait(10)  # Jo's redraw is in hand, waiting for its token
    [thread] = _home_threads() - before
    assert dispatcher.homes.stop(timeout=0) is False  # still waiting: not ended yet
    pacer.release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert slack.calls("views.publish") == []


# ----- running in the background -----------------------------------------------------------------


def test_background_dispatcher_wakes_for_new_work_and_stops_cleanly(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    dispatcher.interval_seconds = 3600  # only wake() can make it look again
    dispatcher.start()
    try:
        time.sleep(0.3)  # the first pass (nothing due) runs at start
        with session_factory.begin() as session:
            prompt_id = add_prompt_for(session, "hv-jsmith")
        dispatcher.wake()
        deadline = time.monotonic() + 10
        while not messages_for(slack, prompt_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(messages_for(slack, prompt_id)) == 1
    finally:
        started = time.monotonic()
        dispatcher.shutdown()
        assert time.monotonic() - started < 5
    assert prompt_row(session_factory, prompt_id).state == RowState.SENT


def test_a_batch_is_recorded_in_one_transaction_and_a_claim_lost_midway_is_left_to_its_holder(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock, monkeypatch
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        add_referral(session, "HO-SECOND")
        first = add_prompt_for(session, "hv-jsmith", position=1)
        lost = add_prompt_for(session, "hv-jsmith", referral_id="HO-SECOND", position=1)
        last = add_prompt_for(session, "gp-lee", position=2)
    real_send = pipeline.find_or_send

    def send_then_lose_the_claim(channel, delivery, pacer=None, **kwargs):
        sent = real_send(channel, delivery, pacer, **kwargs)
        if delivery.row_id == lost:  # another dispatcher takes it over after the send
            with session_factory.begin() as session:
                session.get(OutboxMessage, lost).claimed_by = "another-dispatcher"
        return sent

    monkeypatch.setattr(pipeline, "find_or_send", send_then_lose_the_claim)
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    prompts = [(r.row_id, r.outcome) for r in stats.results if r.kind == OutboxKind.PROMPT]
    assert sorted(prompts) == [
        (first, Outcome.DELIVERED),
        (lost, Outcome.LOST),
        (last, Outcome.DELIVERED),
    ]
    with session_factory() as session:
        logged = [
            json.loads(e.detail)["prompt_id"]
            for e in session.scalars(select(AuditEvent).where(AuditEvent.event == "prompt_sent"))
        ]
        assert sorted(logged) == [first, last]  # the lost one is its holder's to record
        row = session.get(OutboxMessage, lost)
        assert (row.state, row.claimed_by) == (RowState.CLAIMED, "another-dispatcher")
        steps = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.ESCALATION)
        ).all()
        assert sorted(outbox.load_detail(s)["prompt_id"] for s in steps) == [first, last]
        check = verify_chain(session)
        assert check.intact, check.problem
        assert check.rows == session.scalar(select(func.count(AuditEvent.id)))
