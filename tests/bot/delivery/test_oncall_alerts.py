"""On-call alerts are acknowledged: the button, the re-page at +10 min, the EDT-channel post at
+20 min naming who did not answer, one acknowledgement stopping it for every holder; exactly
once with two dispatchers. Against the Slack stand-in, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, RowState
from bot.models import OnCallAcknowledgement, OutboxMessage
from bot.services.oncall import acknowledge_alert
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from handlers import ids
from tests.bot.delivery.dispatch_fixtures import (
    EDT,
    MONDAY_9,
    add_person,
    add_referral,
    add_rota,
    events,
    make_dispatcher,
)

REFERRAL = "HO-K7M3QX"
ROLE = "role:edt_manager"
DETAIL = "on call as edt_manager: referral received Mon 11 Jan 2027 09:00 GMT"
HOLDERS = {"edt-mgr": "U0MGR", "hv-jsmith": "U0HV1"}


def setup_alert(factory: sessionmaker[Session]) -> list[int]:
    """A referral whose on-call alert goes at 09:00 to two holders of edt_manager."""
    with factory.begin() as session:
        add_rota(session)
        add_person(session, "edt-bob", "Bob", "U0BOB", team_id="edt")
        add_referral(session)
        return [
            outbox.enqueue_alert(
                session,
                OutboxKind.ON_CALL,
                REFERRAL,
                due_at=MONDAY_9,
                recipient_id=holder,
                role=ROLE,
                detail=DETAIL,
            ).id
            for holder in HOLDERS
        ]


def oncall_dms(slack: SlackStandIn, user: str) -> list[dict]:
    channel = slack.dm_channel_for(user)
    return [
        m
        for m in (slack.messages(channel) if channel else [])
        if m["metadata"]["event_type"] == "handover_alert"
    ]


def button_of(message: dict) -> dict | None:
    found = [
        element
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    return found[0] if found else None


def rows(factory: sessionmaker[Session], kind: str) -> list[OutboxMessage]:
    with factory() as session:
        query = select(OutboxMessage).where(OutboxMessage.kind == kind)
        return list(session.scalars(query.order_by(OutboxMessage.id)))


def edt_alerts(slack: SlackStandIn) -> list[dict]:
    return [
        m
        for m in slack.messages(EDT)
        if m["metadata"]["event_type"] == "handover_alert"
        and m["metadata"]["event_payload"]["kind"] == "oncall_unanswered"
    ]


def test_an_ignored_alert_is_repaged_at_10_minutes_then_posted_to_edt_at_20(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    alert_ids = setup_alert(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    assert [r.outcome for r in dispatcher.run_once().results] == ["delivered", "delivered"]

    for user, row_id in zip(HOLDERS.values(), alert_ids, strict=True):
        [dm] = oncall_dms(slack, user)
        assert button_of(dm) == {
            "type": "button",
            "action_id": ids.ONCALL_ACK,
            "text": {"type": "plain_text", "text": "Acknowledge"},
            "style": "primary",
            "value": str(row_id),
        }
        assert dm["text"] == f"Handover referral {REFERRAL}: new referral (on call)"
    repages = rows(session_factory, OutboxKind.ONCALL_REPAGE)
    assert [(r.recipient_id, r.due_at) for r in repages] == [
        (holder, MONDAY_9 + timedelta(minutes=10)) for holder in HOLDERS
    ]
    [unanswered] = rows(session_factory, OutboxKind.ONCALL_UNANSWERED)
    assert unanswered.due_at == MONDAY_9 + timedelta(minutes=20)

    clock.set(MONDAY_9 + timedelta(minutes=10) - timedelta(seconds=1))
    dispatcher.run_once()
    assert all(len(oncall_dms(slack, user)) == 1 for user in HOLDERS.values())

    clock.set(MONDAY_9 + timedelta(minutes=10))
    dispatcher.run_once()
    for row_id, user in zip(alert_ids, HOLDERS.values(), strict=True):
        _first, again = oncall_dms(slack, user)
        assert again["text"] == (
            f"Handover referral {REFERRAL}: new referral (on call) (not yet acknowledged)"
        )
        assert again["blocks"][0]["text"]["text"] == (
            "Not yet acknowledged: New referral: you are on call"
        )
        assert button_of(again)["value"] == str(row_id)  # the alert's own row, whichever DM
    repaged = events(session_factory, "on_call_repaged")
    assert sorted(e.recipient for e in repaged) == sorted(HOLDERS)
    assert {e.at for e in repaged} == {MONDAY_9 + timedelta(minutes=10)}
    assert {e.target for e in repaged} == {ROLE}
    assert {json.loads(e.detail)["alert"] for e in repaged} == {"on_call"}
    assert edt_alerts(slack) == []

    clock.set(MONDAY_9 + timedelta(minutes=20) - timedelta(seconds=1))
    dispatcher.run_once()
    assert edt_alerts(slack) == []
    clock.set(MONDAY_9 + timedelta(minutes=20))
    dispatcher.run_once()
    [post] = edt_alerts(slack)
    text = post["blocks"][1]["text"]["text"]
    assert "*Did not answer:* <@U0MGR>, <@U0HV1>" in text
    assert post["text"] == f"Handover referral {REFERRAL}: on-call alert not acknowledged"
    assert button_of(post) is None
    [event] = events(session_factory, "on_call_unanswered")
    assert event.at == MONDAY_9 + timedelta(minutes=20)
    assert event.target == ROLE
    detail = json.loads(event.detail)
    assert detail["not_answered_by"] == list(HOLDERS)
    assert detail["alert"] == "on_call" and detail["channel"] == EDT

    clock.set(MONDAY_9 + timedelta(hours=2))
    dispatcher.run_once()
    assert len(edt_alerts(slack)) == 1
    assert all(len(oncall_dms(slack, user)) == 2 for user in HOLDERS.values())


def test_one_holders_acknowledgement_stops_the_paging_of_every_holder(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    alert_ids = setup_alert(session_factory)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    dispatcher.run_once()

    acked_at = MONDAY_9 + timedelta(minutes=4)
    with session_factory.begin() as session:
        outcome = acknowledge_alert(session, alert_ids[1], "U0HV1", now=acked_at)
    assert outcome.status == "recorded"
    assert (outcome.acknowledged_by, outcome.who, outcome.kind) == (
        "hv-jsmith",
        "<@U0HV1>",
        "on_call",
    )
    # Both holders' DMs are to show it.
    assert sorted(m.channel for m in outcome.messages) == sorted(
        slack.dm_channel_for(user) for user in HOLDERS.values()
    )
    assert {r.state for r in rows(session_factory, OutboxKind.ONCALL_REPAGE)} == {
        RowState.CANCELLED
    }
    assert {r.state for r in rows(session_factory, OutboxKind.ONCALL_UNANSWERED)} == {
        RowState.CANCELLED
    }
    [event] = events(session_factory, "on_call_acknowledged")
    assert (event.at, event.actor, event.target) == (acked_at, "hv-jsmith", ROLE)
    detail = json.loads(event.detail)
    assert detail["holders"] == list(HOLDERS)
    assert detail["alert_row_id"] == alert_ids[0]
    assert detail["follow_ups_cancelled"] == 3

    clock.set(MONDAY_9 + timedelta(hours=1))
    dispatcher.run_once()
    assert all(len(oncall_dms(slack, user)) == 1 for user in HOLDERS.values())
    assert edt_alerts(slack) == []
    assert events(session_factory, "on_call_repaged", "on_call_unanswered") == []

    with session_factory.begin() as session:
        again = acknowledge_alert(session, alert_ids[0], "U0MGR", now=acked_at + timedelta(1))
    assert again.status == "already"
    assert (again.acknowledged_by, again.acknowledged_at) == ("hv-jsmith", acked_at)
    with session_factory() as session:
        assert len(list(session.scalars(select(OnCallAcknowledgement)))) == 1
    assert len(events(session_factory, "on_call_acknowledged")) == 1


def test_only_holders_may_acknowledge(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    alert_ids = setup_alert(session_factory)
    make_dispatcher(settings, session_factory, clock).run_once()

    with session_factory.begin() as session:
        bob = acknowledge_alert(session, alert_ids[0], "U0BOB", now=MONDAY_9)
        stranger = acknowledge_alert(session, alert_ids[0], "U0NOBODY", now=MONDAY_9)
        garbled = acknowledge_alert(session, None, "U0MGR", now=MONDAY_9)
    assert (bob.status, stranger.status, garbled.status) == ("refused", "refused", "not_found")
    assert bob.reason == "Only the people this on-call alert was sent to may acknowledge it."
    assert stranger.reason == "You are not in the Handover rota."
    refused = events(session_factory, "response_refused")
    assert [(e.actor, e.target) for e in refused] == [("edt-bob", ROLE), ("U0NOBODY", ROLE)]
    assert [json.loads(e.detail)["in_rota"] for e in refused] == [True, False]
    assert {json.loads(e.detail)["response"] for e in refused} == {"on_call_acknowledged"}
    assert events(session_factory, "on_call_acknowledged") == []
    assert {r.state for r in rows(session_factory, OutboxKind.ONCALL_REPAGE)} == {RowState.PENDING}


def test_two_dispatchers_repage_and_post_exactly_once(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    setup_alert(session_factory)
    dispatchers = [make_dispatcher(settings, session_factory, clock, name=n) for n in "ab"]
    dispatchers[0].run_once()

    def together() -> None:
        threads = [threading.Thread(target=d.run_once) for d in dispatchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for minutes in (10, 20, 30):
        clock.set(MONDAY_9 + timedelta(minutes=minutes))
        together()
        together()
    assert all(len(oncall_dms(slack, user)) == 2 for user in HOLDERS.values())
    assert len(edt_alerts(slack)) == 1
    assert len(events(session_factory, "on_call_repaged")) == 2
    assert len(events(session_factory, "on_call_unanswered")) == 1
