"""Escalation steps performed through the outbox against the Slack stand-in, on both databases.

A real dispatcher runs at each instant: a step row that falls due becomes its messages, and each
message is delivered on its own (claimed, looked for after a crash, logged as its step).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from time import monotonic, sleep
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import Message
from bot.channels.slack import SlackChannel
from bot.clock import FixedClock
from bot.delivery import outbox, pacing, pipeline
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.escalation import schedule_escalation
from bot.delivery.kinds import OutboxKind, Outcome, RowState
from bot.delivery.metadata import prompt_tag
from bot.delivery.outbox import load_detail
from bot.delivery.results import RowResult
from bot.models import OutboxMessage, Referral, ReferralStatus, Target
from bot.services.responses import record_response
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from handlers.blocks.escalation import (
    build_breach_message,
    build_channel_escalation_message,
    build_escalation_message,
    build_reminder_message,
)
from handlers.blocks.prompt import build_prompt_message
from rota.models import Person, Shift
from tests.bot.delivery.dispatch_fixtures import events, hold_the_pacers_clock
from tests.bot.factories import new_referral, new_target
from tests.rota.factories import add_absence, add_closure, add_person, add_shift, add_team

LONDON = ZoneInfo("Europe/London")
REFERRAL_ID = "HO-ESC001"
SUMMARY = "SUMMARY-MARKER mother's new partner, 4 Example Road, NHS 943 476 5919"
EXTERNAL_REF = "LCS-2026-000777"
USERS = ("hv-jsmith", "hv-cover", "hv-duty", "hv-lead", "pc-jones", "pol-mgr")


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def slack_id(person_id: str) -> str:
    """The Slack user ID tests.rota.factories gives a person."""
    return f"U{person_id.upper().replace('-', '')}"[:32]


MONDAY_9 = at(2026, 11, 16, 9)


# Fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_9)


@pytest.fixture
def standin(clock: FixedClock) -> Iterator[SlackStandIn]:
    # Slack stamps messages with the simulated time, as it would with real time.
    server = SlackStandIn(
        users=[{"id": slack_id(p), "name": p} for p in USERS],
        channels=["C0MASH", "C0EDT"],
        rate_limit=None,
        clock=lambda: clock.now().timestamp(),
    )
    with server:
        yield server


@pytest.fixture
def client(standin: SlackStandIn) -> WebClient:
    return WebClient(base_url=standin.url, token="xoxb-test")


@pytest.fixture
def settings(standin: SlackStandIn) -> Settings:
    return Settings(slack_api_url=standin.url, edt_channel="C0EDT", escalation_channel="C0MASH")


@pytest.fixture
def rota(session_factory: sessionmaker[Session]) -> None:
    """hv-north (Mon-Fri 09:00-17:00): hv-jsmith (deputy hv-cover), hv-duty on duty Monday,
    hv-lead the manager. police-dau (shift-only): pc-jones, managed by pol-mgr."""
    with session_factory.begin() as session:
        add_team(session, "hv-north", manager="hv-lead")
        add_team(session, "police-dau", hours="none", manager="pol-mgr", agency_type="police")
        add_person(session, "hv-lead", "hv-north", permissions="manager")
        add_person(session, "hv-cover", "hv-north")
        add_person(session, "hv-duty", "hv-north")
        add_person(session, "hv-jsmith", "hv-north", deputy="hv-cover")
        add_person(session, "pol-mgr", "police-dau", permissions="manager")
        add_person(session, "pc-jones", "police-dau")
        add_shift(session, "hv-duty", "duty:hv-north", at(2026, 11, 16, 8), at(2026, 11, 16, 18))
        add_shift(session, "pc-jones", "police_dau", at(2026, 11, 13, 20), at(2026, 11, 14, 8))


def sent_prompt(
    factory: sessionmaker[Session],
    client: WebClient,
    clock: FixedClock,
    *,
    sent_at: datetime = MONDAY_9,
    target: str = "person:hv-jsmith",
    recipient: str = "hv-jsmith",
    settings: Settings,
) -> int:
    """A referral with one target whose prompt went to `recipient` at `sent_at` (really posted
    to the stand-in), with its first escalation step scheduled; returns the prompt's id."""
    clock.set(sent_at)
    with factory.begin() as session:
        referral = new_referral(  # standard: +60/+120/+240; urgent: test_urgent_offsets.py
            REFERRAL_ID,
            external_ref=EXTERNAL_REF,
            referred_at=sent_at - timedelta(hours=60),
            received_at=sent_at - timedelta(hours=59),
            summary=SUMMARY,
        )
        session.add(referral)
        session.flush()
        row = new_target(REFERRAL_ID, target, recipient, sent_at, state="prompted")
        session.add(row)
        session.flush()
        prompt = OutboxMessage(
            referral_id=REFERRAL_ID,
            target_id=row.id,
            kind="prompt",
            recipient_id=recipient,
            channel="slack",
            address=slack_id(recipient),
            due_at=sent_at,
            state=RowState.SENT,
            attempts=0,
            sent_at=sent_at,
        )
        session.add(prompt)
        session.flush()
        built = build_prompt_message(
            referral, prompt.id, due_at=sent_at, respond_by=sent_at, tz=LONDON
        )
        posted = SlackChannel(client).send(
            slack_id(recipient),
            Message(built["text"], built["blocks"], prompt_tag(REFERRAL_ID, prompt.id)),
        )
        prompt.message_channel, prompt.message_ts = posted.conversation, posted.ts
        assert schedule_escalation(session, prompt, now=sent_at, settings=settings) is not None
        return prompt.id


def make_dispatcher(
    factory: sessionmaker[Session],
    client: WebClient,
    clock: FixedClock,
    settings: Settings,
    name: str = "test",
) -> Dispatcher:
    return Dispatcher(settings, factory, client, clock, instance_id=name, interval_seconds=30)


def run_due(
    factory: sessionmaker[Session],
    client: WebClient,
    clock: FixedClock,
    now: datetime,
    settings: Settings,
    name: str = "test",
) -> list[RowResult]:
    """A dispatcher pass at `now`; what became of each escalation step row due."""
    clock.set(now)
    stats = make_dispatcher(factory, client, clock, settings, name).run_once()
    return [r for r in stats.results if r.kind == OutboxKind.ESCALATION]


def performed(results: list[RowResult]) -> list[tuple[Outcome, str | None, bool]]:
    return [(r.outcome, r.step, r.late) for r in results]


def claim_first(factory: sessionmaker[Session], now: datetime, who: str = "test") -> int:
    """Claim the earliest due row for `who`, as a dispatcher's pass would."""
    with factory.begin() as session:
        [row] = outbox.claim_due(session, now, instance_id=who, limit=1)
        return row.id


def steps_of(messages: list[dict]) -> list[str]:
    """`prompt` for the prompt, else the escalation step each message belongs to."""
    steps = []
    for message in messages:
        metadata = message["metadata"]
        if metadata["event_type"] == "handover_prompt":
            steps.append("prompt")
        else:
            assert metadata["event_type"] == "handover_escalation"
            steps.append(metadata["event_payload"]["step"])
    return steps


def kinds_of(messages: list[dict]) -> list[str]:
    return [m["metadata"]["event_type"] for m in messages]


def dm_steps(standin: SlackStandIn, person_id: str) -> list[str]:
    channel = standin.dm_channel_for(slack_id(person_id))
    return steps_of(standin.messages(channel)) if channel else []


def rows_of(factory: sessionmaker[Session], kind: OutboxKind) -> list[OutboxMessage]:
    with factory() as session:
        query = select(OutboxMessage).where(OutboxMessage.kind == kind)
        return list(session.scalars(query.order_by(OutboxMessage.id)))


def escalation_rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    return rows_of(factory, OutboxKind.ESCALATION)


STEP_EVENTS = ("reminder_sent", "escalated", "escalated_channel", "breach")


# Performing ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("rota")
def test_every_step_at_its_exact_instant_each_once(
    session_factory, client, clock, standin, settings
) -> None:
    sent_prompt(session_factory, client, clock, settings=settings)
    done = {}
    for instant in (
        at(2026, 11, 16, 9, 59),
        at(2026, 11, 16, 10),
        at(2026, 11, 16, 10, 59),
        at(2026, 11, 16, 11),
        at(2026, 11, 16, 12, 59),
        at(2026, 11, 16, 13),
        at(2026, 11, 16, 16, 59),
        at(2026, 11, 16, 17),
        at(2026, 11, 17, 9),
    ):
        outcomes = run_due(session_factory, client, clock, instant, settings)
        done[instant.strftime("%a %H:%M")] = performed(outcomes)
    assert done == {
        "Mon 09:59": [],
        "Mon 10:00": [(Outcome.PERFORMED, "remind", False)],
        "Mon 10:59": [],
        "Mon 11:00": [(Outcome.PERFORMED, "escalate", False)],
        "Mon 12:59": [],
        "Mon 13:00": [(Outcome.PERFORMED, "escalate_channel", False)],
        "Mon 16:59": [],
        "Mon 17:00": [(Outcome.PERFORMED, "breach", False)],
        "Tue 09:00": [],
    }

    # The reminder sits in the recipient's DM under the prompt; the chain and the manager are
    # escalated to once; the channel gets the +240 post and the breach; the manager the breach.
    assert dm_steps(standin, "hv-jsmith") == ["prompt", "remind"]
    assert dm_steps(standin, "hv-cover") == ["escalate"]
    assert dm_steps(standin, "hv-duty") == ["escalate"]
    assert dm_steps(standin, "hv-lead") == ["escalate", "breach"]
    assert steps_of(standin.messages("C0MASH")) == ["escalate_channel", "breach"]
    # The EDT channel gets the referral's card (redrawn as the target is escalated), no step.
    assert kinds_of(standin.messages("C0EDT")) == ["handover_card"]

    logged = [(e.event, e.recipient) for e in events(session_factory, *STEP_EVENTS)]
    assert logged == [
        ("reminder_sent", "hv-jsmith"),
        ("escalated", "hv-cover"),
        ("escalated", "hv-duty"),
        ("escalated", "hv-lead"),
        ("escalated_channel", "C0MASH"),
        ("breach", "C0MASH"),
    ]
    details = [json.loads(e.detail) for e in events(session_factory, *STEP_EVENTS)]
    assert {(d["step"], d["due_at"], d["late"]) for d in details} == {
        ("remind", "2026-11-16T10:00:00+00:00", False),
        ("escalate", "2026-11-16T11:00:00+00:00", False),
        ("escalate_channel", "2026-11-16T13:00:00+00:00", False),
        ("breach", "2026-11-16T17:00:00+00:00", False),
    }
    steps = {r.id: load_detail(r)["step"] for r in escalation_rows(session_factory)}
    assert all(steps[d["row_id"]] == d["step"] for d in details)
    breach = next(d for d in details if d["step"] == "breach")
    assert {n["recipient"] for n in breach["notified"]} == {"C0MASH", "hv-lead"}
    assert all(e.target == "person:hv-jsmith" for e in events(session_factory, *STEP_EVENTS))
    assert [r.state for r in escalation_rows(session_factory)] == [RowState.SENT] * 4
    # One message row per message, each sent once.
    messages = rows_of(session_factory, OutboxKind.STEP_MESSAGE)
    assert [(load_detail(r)["step"], r.state) for r in messages] == [
        ("remind", RowState.SENT),
        *[("escalate", RowState.SENT)] * 3,
        ("escalate_channel", RowState.SENT),
        *[("breach", RowState.SENT)] * 2,
    ]


@pytest.mark.usefixtures("rota")
def test_messages_carry_step_metadata_and_never_the_summary(
    session_factory, client, clock, standin, settings
) -> None:
    prompt_id = sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 18), settings)

    text = standin.all_text()
    assert "SUMMARY-MARKER" not in text and "Example Road" not in text and "943 476" not in text
    rows = {r.id: load_detail(r) for r in rows_of(session_factory, OutboxKind.STEP_MESSAGE)}
    # The prompt alone is a handover_prompt; every step message is a handover_escalation that
    # names the prompt it chases, its step and its own outbox row.
    [prompt] = [m for m in standin.messages() if m["metadata"]["event_type"] == "handover_prompt"]
    assert prompt["metadata"]["event_payload"] == {
        "referral_id": REFERRAL_ID,
        "prompt_id": prompt_id,
    }
    [card] = [m for m in standin.messages() if m["metadata"]["event_type"] == "handover_card"]
    steps = [m for m in standin.messages() if m not in (prompt, card)]
    # The reminder, the escalation (performed at 18:00: only the manager, always told), the
    # channel post, and the breach in the channel and to the manager.
    assert steps_of(steps) == ["remind", "escalate", "escalate_channel", "breach", "breach"]
    for message in steps:
        assert message["metadata"]["event_type"] == "handover_escalation"
        payload = message["metadata"]["event_payload"]
        assert set(payload) == {"referral_id", "prompt_id", "step", "row_id"}
        assert payload["referral_id"] == REFERRAL_ID and payload["prompt_id"] == prompt_id
        assert rows[payload["row_id"]]["step"] == payload["step"]
    assert len({m["metadata"]["event_payload"]["row_id"] for m in steps}) == len(steps)
    # Lock-screen text names the referral ID only: no category, no case reference.
    for call in standin.calls("chat.postMessage"):
        notification = call.args["text"]
        assert re.fullmatch(rf"Handover referral {REFERRAL_ID}: [a-z ,]+", notification)
        assert EXTERNAL_REF not in notification and "abuse" not in notification.lower()


class Died(BaseException):
    """The dispatcher's process ends here (not an error it could catch and handle)."""


@pytest.mark.usefixtures("rota")
def test_a_restart_between_sending_and_recording_sends_nothing_twice(
    session_factory, client, clock, standin, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt_id = sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 10), settings)

    # 11:00: the escalation goes out to its three people, then the process dies while
    # recording them (one transaction for the batch: its claims on all three are left behind).
    now = at(2026, 11, 16, 11)
    clock.set(now)
    recording = []

    def confirm_then_die(_ctx, _factory, posted):
        recording.append(sorted(p.delivery.kind for p in posted))
        raise Died

    monkeypatch.setattr(pipeline, "confirm", confirm_then_die)
    with pytest.raises(Died):
        make_dispatcher(session_factory, client, clock, settings, "dead").run_once()
    monkeypatch.undo()
    assert recording == [[OutboxKind.CARD, *[OutboxKind.STEP_MESSAGE] * 3]]
    assert dm_steps(standin, "hv-cover") == ["escalate"]
    assert dm_steps(standin, "hv-duty") == ["escalate"]
    assert dm_steps(standin, "hv-lead") == ["escalate"]
    assert events(session_factory, "escalated") == []

    # Restart: the abandoned claims are taken over once their lease ends; the messages already
    # in Slack are found there, none sent again.
    later = now + timedelta(minutes=11)
    clock.set(later)
    stats = make_dispatcher(session_factory, client, clock, settings, "test-2").run_once()
    messages = [r for r in stats.results if r.kind == OutboxKind.STEP_MESSAGE]
    assert [(r.outcome, r.found) for r in messages] == [(Outcome.DELIVERED, True)] * 3

    # The same step row again, and scheduling the prompt's escalation again: nothing doubles.
    [escalate] = [
        r for r in escalation_rows(session_factory) if load_detail(r)["step"] == "escalate"
    ]
    again = make_dispatcher(session_factory, client, clock, settings, "test-2").process(escalate.id)
    assert [r.outcome for r in again.results] == [Outcome.LOST]  # not ours: already performed
    with session_factory.begin() as session:
        prompt = session.get(OutboxMessage, prompt_id)
        assert prompt is not None
        first = schedule_escalation(session, prompt, now=later, settings=settings)
        assert first is not None and load_detail(first)["step"] == "remind"
    assert run_due(session_factory, client, clock, later, settings) == []

    for person in ("hv-cover", "hv-duty", "hv-lead"):
        assert dm_steps(standin, person) == ["escalate"]
    assert dm_steps(standin, "hv-jsmith") == ["prompt", "remind"]
    assert [e.recipient for e in events(session_factory, "escalated")] == [
        "hv-cover",
        "hv-duty",
        "hv-lead",
    ]
    assert [load_detail(r)["step"] for r in escalation_rows(session_factory)] == [
        "remind",
        "escalate",
        "escalate_channel",
    ]


def escalated_to(factory: sessionmaker[Session]) -> list[tuple[str, str]]:
    """(recipient, via) of each `escalated` event, in order."""
    return [(e.recipient, json.loads(e.detail)["via"]) for e in events(factory, "escalated")]


@pytest.mark.usefixtures("rota")
def test_a_deputy_prompted_for_someone_on_leave_escalates_onward_not_back_to_them(
    session_factory, client, clock, standin, settings
) -> None:
    with session_factory.begin() as session:
        add_absence(session, "hv-jsmith", date(2026, 11, 16), date(2026, 11, 20))
    sent_prompt(session_factory, client, clock, recipient="hv-cover", settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)

    assert escalated_to(session_factory) == [("hv-duty", "duty"), ("hv-lead", "manager")]
    assert standin.dm_channel_for(slack_id("hv-jsmith")) is None  # on leave: left alone
    assert dm_steps(standin, "hv-cover") == ["prompt", "remind"]
    assert dm_steps(standin, "hv-duty") == ["escalate"]
    assert dm_steps(standin, "hv-lead") == ["escalate"]


@pytest.mark.usefixtures("rota")
def test_the_escalation_skips_people_off_work_but_always_tells_the_team_manager(
    session_factory, client, clock, standin, settings
) -> None:
    with session_factory.begin() as session:
        add_absence(session, "hv-cover", date(2026, 11, 16), date(2026, 11, 16))
        add_absence(session, "hv-lead", date(2026, 11, 16), date(2026, 11, 16))
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)

    assert escalated_to(session_factory) == [("hv-duty", "duty"), ("hv-lead", "manager")]
    assert standin.dm_channel_for(slack_id("hv-cover")) is None


@pytest.mark.usefixtures("rota")
def test_a_recipient_no_longer_in_the_chain_escalates_to_everyone_in_it_at_work(
    session_factory, client, clock, standin, settings
) -> None:
    # hv-duty was prompted as duty holder; since then the duty shift was taken off the rota
    # and hv-jsmith went on leave.
    sent_prompt(session_factory, client, clock, recipient="hv-duty", settings=settings)
    with session_factory.begin() as session:
        for shift in session.scalars(select(Shift).where(Shift.person_id == "hv-duty")):
            session.delete(shift)
        add_absence(session, "hv-jsmith", date(2026, 11, 16), date(2026, 11, 16))
    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)

    assert escalated_to(session_factory) == [("hv-cover", "deputy"), ("hv-lead", "manager")]
    assert dm_steps(standin, "hv-duty") == ["prompt", "remind"]
    assert standin.dm_channel_for(slack_id("hv-jsmith")) is None


def target_state(factory: sessionmaker[Session]) -> str:
    with factory() as session:
        return session.scalars(select(Target.state)).one()


@pytest.mark.usefixtures("rota")
def test_the_escalate_step_marks_the_target_escalated_and_redraws_the_card(
    session_factory, client, clock, standin, settings
) -> None:
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 10), settings)
    assert (target_state(session_factory), standin.messages("C0EDT")) == ("prompted", [])

    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)
    assert target_state(session_factory) == "escalated"
    [card] = standin.messages("C0EDT")
    assert card["metadata"]["event_type"] == "handover_card"
    assert "`person:hv-jsmith`: escalated" in json.dumps(card["blocks"])

    # Still waiting: the channel post and the breach go out, and the state stays escalated.
    outcomes = run_due(session_factory, client, clock, at(2026, 11, 16, 17), settings)
    assert [(o.outcome, o.step) for o in outcomes] == [
        (Outcome.PERFORMED, "escalate_channel"),
        (Outcome.PERFORMED, "breach"),
    ]
    assert target_state(session_factory) == "escalated"


@pytest.mark.usefixtures("rota")
def test_a_response_recorded_while_the_escalation_goes_out_is_kept(
    session_factory, client, clock, standin, settings
) -> None:
    prompt_id = sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 10), settings)
    now = at(2026, 11, 16, 11)
    clock.set(now)
    dispatcher = make_dispatcher(session_factory, client, clock, settings)
    step = dispatcher.process(claim_first(session_factory, now))
    assert [(r.outcome, r.step) for r in step.results] == [(Outcome.PERFORMED, "escalate")]
    assert target_state(session_factory) == "escalated"
    # The first escalation DM (to the deputy) passes its claim check and is held at Slack
    # while hv-jsmith acknowledges, as their click does: the answer cancels the step's DMs.
    standin.hold("chat.postMessage", seconds=30)
    done: list = []
    sending = threading.Thread(target=lambda: done.append(dispatcher.run_once()))
    sending.start()
    try:
        deadline = monotonic() + 15
        while not standin.held() and monotonic() < deadline:
            sleep(0.02)
        assert [h["method"] for h in standin.held()] == ["chat.postMessage"]
        assert acknowledge(session_factory, prompt_id, now, settings) == "recorded"
    finally:
        standin.release_holds()
        sending.join(timeout=30)
    [stats] = done

    # The DM already on its way is delivered and logged, saying the answer came first; the
    # two not yet sent are not sent (counted as the batch goes; the DM sent, as it ends). The
    # answer stands.
    assert [(r.outcome, r.reason) for r in stats.results if r.kind == OutboxKind.STEP_MESSAGE] == [
        (Outcome.CANCELLED, "answered"),
        (Outcome.CANCELLED, "answered"),
        (Outcome.DELIVERED, None),
    ]
    assert escalated_to(session_factory) == [("hv-cover", "deputy")]
    [escalated] = events(session_factory, "escalated")
    assert json.loads(escalated.detail)["cancelled_while_sending"] == "answered"
    assert dm_steps(standin, "hv-cover") == ["escalate"]
    assert standin.dm_channel_for(slack_id("hv-duty")) is None
    assert standin.dm_channel_for(slack_id("hv-lead")) is None
    assert target_state(session_factory) == "acknowledged"
    # The next step was cancelled with the DMs: nothing is due at 13:00, nothing is posted.
    assert run_due(session_factory, client, clock, at(2026, 11, 16, 13), settings) == []
    assert standin.messages("C0MASH") == []
    assert target_state(session_factory) == "acknowledged"


def acknowledge(
    factory: sessionmaker[Session], prompt_id: int, now: datetime, settings: Settings
) -> str:
    """hv-jsmith clicks "acknowledge" on the prompt (as the action handler records it)."""
    with factory.begin() as session:
        outcome = record_response(
            session, prompt_id, slack_id("hv-jsmith"), "acknowledged", now=now, settings=settings
        )
    return outcome.status


def answer_while_the_batch_waits(
    monkeypatch: pytest.MonkeyPatch,
    dispatcher: Dispatcher,
    factory: sessionmaker[Session],
    prompt_id: int,
    settings: Settings,
) -> list[str]:
    """hv-jsmith acknowledges (as their click does) while `dispatcher`'s batch waits for a
    rate token: its one token this second is taken first. Returns the answer's status once it
    is given."""
    dispatcher.pacer.wait("xoxb-test", "chat.postMessage")
    # Until the answer is given: else its message could be sent before the answer.
    answered: list[str] = []
    hold_the_pacers_clock(monkeypatch, dispatcher.pacer, until=answered)
    # No token reserved ahead: the batch sleeps before its take's check (a reservation's sleep
    # comes after the check; only one longer than pacing.CHECK_AGAIN_AFTER is checked again).
    monkeypatch.setattr(pacing, "RESERVE_AHEAD", 0.0)

    def answer_then_wait(seconds: float) -> None:
        if not answered:
            answered.append(acknowledge(factory, prompt_id, dispatcher.clock.now(), settings))
        sleep(seconds)

    monkeypatch.setattr(dispatcher.pacer, "_sleep", answer_then_wait)
    return answered


@pytest.mark.parametrize(
    ("instant", "step", "before"),
    [
        (at(2026, 11, 16, 10), "remind", []),
        (at(2026, 11, 16, 11), "escalate", ["remind"]),
    ],
)
@pytest.mark.usefixtures("rota")
def test_an_answer_while_a_step_s_messages_wait_in_a_batch_cancels_them_and_nothing_is_sent(
    session_factory,
    client,
    clock,
    standin,
    settings,
    monkeypatch: pytest.MonkeyPatch,
    instant: datetime,
    step: str,
    before: list[str],
) -> None:
    prompt_id = sent_prompt(session_factory, client, clock, settings=settings)
    if before:
        run_due(session_factory, client, clock, instant - timedelta(hours=1), settings)
    assert [e.event for e in events(session_factory, *STEP_EVENTS)] == [
        "reminder_sent" for _ in before
    ]
    clock.set(instant)
    # One message a second: the step's messages are claimed in a batch that waits for a token.
    slow = dataclasses.replace(settings, slack_rate=1.0)
    dispatcher = make_dispatcher(session_factory, client, clock, slow)
    assert [
        (r.outcome, r.step)
        for r in dispatcher.process(claim_first(session_factory, instant)).results
    ] == [(Outcome.PERFORMED, step)]
    posts_before = len(standin.calls("chat.postMessage"))
    answered = answer_while_the_batch_waits(
        monkeypatch, dispatcher, session_factory, prompt_id, settings
    )
    stats = dispatcher.run_once()

    assert answered == ["recorded"]
    messages = [r for r in stats.results if r.kind == OutboxKind.STEP_MESSAGE]
    wanted = 1 if step == "remind" else 3  # the reminder; hv-cover, hv-duty and hv-lead
    assert [(r.outcome, r.reason) for r in messages] == [(Outcome.CANCELLED, "answered")] * wanted
    # Only the card, redrawn by the answer, is posted.
    posted = [c.args["channel"] for c in standin.calls("chat.postMessage")][posts_before:]
    assert posted == ["C0EDT"]
    assert dm_steps(standin, "hv-jsmith") == ["prompt", *before]
    assert escalated_to(session_factory) == []
    assert [e.event for e in events(session_factory, *STEP_EVENTS)] == [
        "reminder_sent" for _ in before
    ]
    assert [e.event for e in events(session_factory, "acknowledged")] == ["acknowledged"]
    assert [(r.state, r.last_error) for r in rows_of(session_factory, OutboxKind.STEP_MESSAGE)][
        len(before) :
    ] == [(RowState.CANCELLED, "answered")] * wanted
    assert target_state(session_factory) == "acknowledged"


@pytest.mark.usefixtures("rota")
def test_a_reminder_whose_send_is_under_way_when_the_answer_comes_is_sent_once_and_recorded(
    session_factory, client, clock, standin, settings
) -> None:
    prompt_id = sent_prompt(session_factory, client, clock, settings=settings)
    now = at(2026, 11, 16, 10)
    clock.set(now)
    dispatcher = make_dispatcher(session_factory, client, clock, settings)
    step = dispatcher.process(claim_first(session_factory, now))
    assert [(r.outcome, r.step) for r in step.results] == [(Outcome.PERFORMED, "remind")]
    # The reminder passes its claim check, then is held at Slack before it takes effect, while
    # hv-jsmith acknowledges.
    standin.hold("chat.postMessage", seconds=30)
    done: list = []
    sending = threading.Thread(target=lambda: done.append(dispatcher.run_once()))
    sending.start()
    try:
        deadline = monotonic() + 15
        while not standin.held() and monotonic() < deadline:
            sleep(0.02)
        assert [h["method"] for h in standin.held()] == ["chat.postMessage"]
        assert acknowledge(session_factory, prompt_id, now, settings) == "recorded"
    finally:
        standin.release_holds()
        sending.join(timeout=30)
    [stats] = done

    assert [(r.outcome, r.reason) for r in stats.results if r.kind == OutboxKind.STEP_MESSAGE] == [
        (Outcome.DELIVERED, None)
    ]
    assert dm_steps(standin, "hv-jsmith") == ["prompt", "remind"]
    [reminder] = events(session_factory, *STEP_EVENTS)
    detail = json.loads(reminder.detail)
    assert (reminder.event, reminder.recipient, detail["delivered"]) == (
        "reminder_sent",
        "hv-jsmith",
        True,
    )
    assert detail["cancelled_while_sending"] == "answered"
    [message] = rows_of(session_factory, OutboxKind.STEP_MESSAGE)
    assert (message.state, message.last_error) == (RowState.SENT, None)
    # The answer stands, and stopped the next step.
    assert target_state(session_factory) == "acknowledged"
    assert [(r.state, r.last_error) for r in escalation_rows(session_factory)] == [
        (RowState.SENT, None),
        (RowState.CANCELLED, "answered"),
    ]
    assert run_due(session_factory, client, clock, at(2026, 11, 16, 18), settings) == []
    assert dm_steps(standin, "hv-jsmith") == ["prompt", "remind"]


@pytest.mark.usefixtures("rota")
def test_a_lost_claim_records_nothing(
    session_factory, client, clock, standin, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent_prompt(session_factory, client, clock, settings=settings)
    now = at(2026, 11, 16, 10)
    clock.set(now)
    dispatcher = make_dispatcher(session_factory, client, clock, settings)

    # A step whose claim another dispatcher took over performs nothing.
    row_id = claim_first(session_factory, now)
    with session_factory.begin() as session:
        session.get(OutboxMessage, row_id).claimed_by = "another-dispatcher"
    assert [r.outcome for r in dispatcher.process(row_id).results] == [Outcome.LOST]
    assert rows_of(session_factory, OutboxKind.STEP_MESSAGE) == []
    assert len(escalation_rows(session_factory)) == 1

    # A message whose claim is lost before it is sent is not sent: whoever holds it sends it.
    with session_factory.begin() as session:
        session.get(OutboxMessage, row_id).claimed_by = "test"
    assert [r.outcome for r in dispatcher.process(row_id).results] == [Outcome.PERFORMED]
    message_id = claim_first(session_factory, now)
    real_send = pipeline.find_or_send

    def send_after_losing_the_claim(channel, delivery, pacer=None, **kwargs):
        with session_factory.begin() as session:
            session.get(OutboxMessage, message_id).claimed_by = "another-dispatcher"
        return real_send(channel, delivery, pacer, **kwargs)

    monkeypatch.setattr(pipeline, "find_or_send", send_after_losing_the_claim)
    assert [r.outcome for r in dispatcher.process(message_id).results] == [Outcome.LOST]
    assert dm_steps(standin, "hv-jsmith") == ["prompt"]
    assert events(session_factory, *STEP_EVENTS) == []
    with session_factory() as session:
        row = session.get(OutboxMessage, message_id)
        assert (row.state, row.claimed_by) == (RowState.CLAIMED, "another-dispatcher")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("acknowledged", "responded"),
        ("has_information", "responded"),
        ("cancelled", "target_cancelled"),
        ("closed", "referral_closed"),
    ],
)
@pytest.mark.usefixtures("rota")
def test_a_response_before_a_step_cancels_it_and_nothing_is_sent(
    session_factory, client, clock, standin, settings, change: str, reason: str
) -> None:
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 10), settings)
    calls_before = len(standin.calls("chat.postMessage"))

    # 10:30: someone answers (or the referral is closed); the 11:00 row is still in the outbox.
    with session_factory.begin() as session:
        if change == "closed":
            referral = session.get(Referral, REFERRAL_ID)
            referral.status = ReferralStatus.CLOSED
        else:
            target = session.scalars(select(Target)).one()
            target.state = change

    outcomes = run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)
    assert [(o.outcome, o.step, o.reason) for o in outcomes] == [
        (Outcome.CANCELLED, "escalate", reason)
    ]
    assert len(standin.calls("chat.postMessage")) == calls_before
    assert [e.event for e in events(session_factory, *STEP_EVENTS)] == ["reminder_sent"]
    assert [r.state for r in escalation_rows(session_factory)] == [
        RowState.SENT,
        RowState.CANCELLED,
    ]
    assert run_due(session_factory, client, clock, at(2026, 11, 16, 18), settings) == []


@pytest.mark.usefixtures("rota")
def test_after_downtime_each_missed_step_is_performed_once_in_order_marked_late(
    session_factory, client, clock, standin, settings
) -> None:
    sent_prompt(session_factory, client, clock, settings=settings)
    # The bot was down from 09:05 until 17:30 (while hv-duty is still on duty until 18:00).
    outcomes = run_due(session_factory, client, clock, at(2026, 11, 16, 17, 30), settings)
    assert [(o.step, o.late) for o in outcomes] == [
        ("remind", True),
        ("escalate", True),
        ("escalate_channel", True),
        ("breach", True),
    ]
    details = [json.loads(e.detail) for e in events(session_factory, *STEP_EVENTS)]
    assert [(d["step"], d["due_at"]) for d in details] == [
        ("remind", "2026-11-16T10:00:00+00:00"),
        ("escalate", "2026-11-16T11:00:00+00:00"),
        ("escalate", "2026-11-16T11:00:00+00:00"),
        ("escalate_channel", "2026-11-16T13:00:00+00:00"),
        ("breach", "2026-11-16T17:00:00+00:00"),
    ]
    assert all(d["late"] for d in details)
    # Escalated at 17:30 to whoever is at work then (hv-cover went home at 17:00), and the
    # team manager whatever the hour.
    assert [e.recipient for e in events(session_factory, "escalated")] == ["hv-duty", "hv-lead"]
    assert dm_steps(standin, "hv-jsmith") == ["prompt", "remind"]
    assert steps_of(standin.messages("C0MASH")) == ["escalate_channel", "breach"]
    assert run_due(session_factory, client, clock, at(2026, 11, 17, 9), settings) == []


@pytest.mark.usefixtures("rota")
def test_friday_afternoon_prompt_reminds_on_tuesday_after_the_bank_holiday(
    session_factory, client, clock, settings
) -> None:
    sent_prompt(session_factory, client, clock, sent_at=at(2027, 8, 27, 16, 30), settings=settings)
    [row] = escalation_rows(session_factory)
    assert load_detail(row)["step"] == "remind"
    assert row.due_at == datetime.fromisoformat("2027-08-31T09:30:00+01:00")
    # Nothing is due over the long weekend.
    assert run_due(session_factory, client, clock, at(2027, 8, 31, 9, 29), settings) == []


@pytest.mark.usefixtures("rota")
def test_shift_only_recipient_counts_wall_clock_minutes(
    session_factory, client, clock, standin, settings
) -> None:
    sent_prompt(
        session_factory,
        client,
        clock,
        sent_at=at(2026, 11, 14, 2),
        target="role:police_dau",
        recipient="pc-jones",
        settings=settings,
    )
    [row] = escalation_rows(session_factory)
    assert row.due_at == at(2026, 11, 14, 3)
    run_due(session_factory, client, clock, at(2026, 11, 14, 3), settings)
    run_due(session_factory, client, clock, at(2026, 11, 14, 4), settings)
    # A role's chain is its shift holder, so the escalation goes to the holder's team manager.
    assert dm_steps(standin, "pc-jones") == ["prompt", "remind"]
    assert dm_steps(standin, "pol-mgr") == ["escalate"]
    rows = escalation_rows(session_factory)
    assert [(load_detail(r)["step"], r.due_at) for r in rows][-1] == (
        "escalate_channel",
        at(2026, 11, 14, 6),
    )


@pytest.mark.usefixtures("rota")
def test_without_an_escalation_channel_the_edt_channel_is_used(
    session_factory, client, clock, standin, settings
) -> None:
    settings = dataclasses.replace(settings, escalation_channel=None)
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 13), settings)
    # The card (drawn when the target was escalated at 11:00), then the +240 post.
    card, post = standin.messages("C0EDT")
    assert kinds_of([card]) == ["handover_card"] and steps_of([post]) == ["escalate_channel"]
    [event] = events(session_factory, "escalated_channel")
    assert event.recipient == "C0EDT"


@pytest.mark.usefixtures("rota")
def test_a_person_slack_refuses_does_not_stop_the_others(
    session_factory, client, clock, standin, settings
) -> None:
    standin.add_users([{"id": slack_id("hv-cover"), "name": "hv-cover", "deleted": True}])
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)
    assert dm_steps(standin, "hv-duty") == ["escalate"]
    assert dm_steps(standin, "hv-lead") == ["escalate"]
    escalated = {e.recipient: json.loads(e.detail) for e in events(session_factory, "escalated")}
    assert escalated["hv-cover"]["delivered"] is False and escalated["hv-cover"]["error"]
    assert escalated["hv-duty"]["delivered"] is True
    assert load_detail(escalation_rows(session_factory)[-1])["step"] == "escalate_channel"
    # Not a prompt that failed: nobody is alerted, the step is logged as not reaching them.
    assert events(session_factory, "prompt_failed") == []
    assert rows_of(session_factory, OutboxKind.DELIVERY_FAILURE) == []


@pytest.mark.usefixtures("rota")
def test_someone_without_a_slack_user_is_looked_up_by_email_as_for_a_prompt(
    session_factory, client, clock, standin, settings
) -> None:
    # hv-cover's Slack account is found by email and remembered; nobody in Slack has
    # hv-duty's email, so the escalation says it did not reach them.
    standin.add_users(
        [{"id": "U0COVERBYMAIL", "name": "hv-cover", "email": "hv-cover@example.org"}]
    )
    with session_factory.begin() as session:
        session.get(Person, "hv-cover").slack_user = None
        session.get(Person, "hv-duty").slack_user = None
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)
    escalated = {e.recipient: json.loads(e.detail) for e in events(session_factory, "escalated")}
    assert escalated["hv-cover"] == {**escalated["hv-cover"], "via": "deputy", "delivered": True}
    assert escalated["hv-duty"] == {
        **escalated["hv-duty"],
        "via": "duty",
        "delivered": False,
        "error": "users_not_found",
    }
    assert escalated["hv-lead"]["delivered"] is True
    assert steps_of(standin.messages(standin.dm_channel_for("U0COVERBYMAIL"))) == ["escalate"]
    with session_factory() as session:
        assert session.get(Person, "hv-cover").slack_user_found == "U0COVERBYMAIL"
    assert [c.args["email"] for c in standin.calls("users.lookupByEmail")] == [
        "hv-cover@example.org",
        "hv-duty@example.org",
    ]


@pytest.mark.usefixtures("rota")
def test_the_breach_is_logged_once_its_last_message_settles(
    session_factory, client, clock, standin, settings
) -> None:
    standin.add_users([{"id": slack_id("hv-lead"), "name": "hv-lead", "deleted": True}])
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 16, 59), settings)
    now = at(2026, 11, 16, 17)
    clock.set(now)
    dispatcher = make_dispatcher(session_factory, client, clock, settings)
    dispatcher.process(claim_first(session_factory, now))  # the breach step: two messages

    dispatcher.process(claim_first(session_factory, now))  # the channel post
    assert events(session_factory, "breach") == []
    dispatcher.process(claim_first(session_factory, now))  # the manager, whom Slack refuses
    [breach] = events(session_factory, "breach")
    detail = json.loads(breach.detail)
    assert breach.recipient == "C0MASH"
    assert detail["notified"] == [
        {"recipient": "C0MASH", "via": "channel", "delivered": True},
        {"recipient": "hv-lead", "via": "manager", "delivered": False, "error": "user_disabled"},
    ]
    assert run_due(session_factory, client, clock, now, settings) == []
    assert len(events(session_factory, "breach")) == 1


@pytest.mark.usefixtures("rota")
def test_a_closure_added_after_the_prompt_moves_the_step_later(
    session_factory, client, clock, standin, settings
) -> None:
    sent_prompt(session_factory, client, clock, settings=settings)
    with session_factory.begin() as session:
        add_closure(session, date(2026, 11, 16), "hv-north", time(9, 30), time(12))
    outcomes = run_due(session_factory, client, clock, at(2026, 11, 16, 10), settings)
    # 30 working minutes before the closure, 30 after it.
    assert [(o.outcome, o.next_due_at) for o in outcomes] == [
        (Outcome.RESCHEDULED, at(2026, 11, 16, 12, 30))
    ]
    assert dm_steps(standin, "hv-jsmith") == ["prompt"]
    assert run_due(session_factory, client, clock, at(2026, 11, 16, 12, 29), settings) == []
    outcomes = run_due(session_factory, client, clock, at(2026, 11, 16, 12, 30), settings)
    assert performed(outcomes) == [(Outcome.PERFORMED, "remind", False)]
    assert dm_steps(standin, "hv-jsmith") == ["prompt", "remind"]


# Builders --------------------------------------------------------------------------------------


class _Referral:
    referral_id = "HO-7K2M9Q"
    external_ref = "LCS-2026-000123"
    category = "domestic_abuse"
    urgency = "urgent"
    referred_at = at(2026, 11, 14, 2, 10)
    received_at = at(2026, 11, 14, 2, 15)
    summary = "SUMMARY-MARKER narrative"


def test_builders_name_only_the_referral_in_the_notification_and_never_the_summary() -> None:
    sent, due = at(2026, 11, 16, 9), at(2026, 11, 16, 17)
    messages = [
        build_reminder_message(_Referral(), 7, sent_at=sent, respond_by=due, tz=LONDON),
        build_escalation_message(
            _Referral(),
            7,
            target="person:hv-jsmith",
            asked="<@UHVJSMITH>",
            sent_at=sent,
            respond_by=due,
            via="deputy",
            tz=LONDON,
        ),
        build_channel_escalation_message(
            _Referral(),
            target="person:hv-jsmith",
            asked="<@UHVJSMITH>",
            sent_at=sent,
            escalated_to=["<@UHVCOVER>"],
            breach_at=due,
            tz=LONDON,
        ),
        build_breach_message(
            _Referral(),
            target="person:hv-jsmith",
            asked="<@UHVJSMITH>",
            sent_at=sent,
            breach_at=due,
            tz=LONDON,
        ),
    ]
    for message in messages:
        assert message["text"].startswith("Handover referral HO-7K2M9Q: ")
        assert "LCS-" not in message["text"] and "abuse" not in message["text"].lower()
        body = json.dumps(message["blocks"])
        assert "SUMMARY-MARKER" not in body
        assert "LCS-2026-000123" in body and "Domestic abuse" in body and "URGENT" in body
        assert "<@UHVJSMITH>" in body or "You were asked" in body
        assert "Mon 16 Nov 2026 09:00 GMT" in body
    # The DMs let their reader answer for the target; the channel and breach posts inform.
    assert [any(b["type"] == "actions" for b in m["blocks"]) for m in messages] == [
        True,
        True,
        False,
        False,
    ]
