"""The on-call alerts' button, `handover_oncall_ack`, through signed Slack requests over HTTP.

Two holders (edt-mgr, edt-bob) got the same on-call alert, with its re-page and EDT-channel
post pending. Each test runs on SQLite and PostgreSQL; the bot talks to the Slack stand-in.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, RowState
from bot.models import AuditEvent, OnCallAcknowledgement, OutboxMessage, Referral
from handlers import ids
from handlers.blocks.alerts import build_alert_message
from tests.handlers.slack_payloads import (
    NOW,
    REFERRAL_ID,
    SUMMARY,
    Harness,
    block_actions,
    build_scenario,
    running_bot,
    slack_user,
    wait_for,
)

HOLDERS = ("edt-mgr", "edt-bob")
SENT_AT = NOW - timedelta(minutes=3)


@dataclass(frozen=True)
class Alert:
    row_ids: tuple[int, ...]  # one per holder
    dms: tuple[tuple[str, str], ...]  # (channel, ts) of each holder's DM
    follow_up_ids: tuple[int, ...]


@pytest.fixture
def bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with running_bot(session_factory) as harness:
        yield harness


@pytest.fixture
def alert(bot: Harness, session_factory: sessionmaker[Session]) -> Alert:
    """The scenario, and an on-call alert DM'd to both holders three minutes ago."""
    build_scenario(session_factory, bot.client)
    tz = bot.services.settings.timezone
    rows, dms, follow_ups = [], [], []
    with session_factory.begin() as session:
        referral = session.get(Referral, REFERRAL_ID)
        for holder in HOLDERS:
            row = outbox.enqueue_alert(
                session,
                OutboxKind.ON_CALL,
                REFERRAL_ID,
                due_at=SENT_AT,
                recipient_id=holder,
                role="role:edt_manager",
                detail="on call as edt_manager",
            )
            built = build_alert_message(
                OutboxKind.ON_CALL, referral, tz=tz, target="role:edt_manager", ack_row_id=row.id
            )
            posted = bot.client.chat_postMessage(channel=slack_user(holder), **built)
            row.state, row.sent_at, row.channel = RowState.SENT, SENT_AT, "slack"
            row.address = slack_user(holder)
            row.message_channel, row.message_ts = posted["channel"], posted["ts"]
            made = outbox.enqueue_oncall_follow_ups(
                session, row, sent_at=SENT_AT, repage_after=timedelta(minutes=10)
            )
            rows.append(row.id)
            dms.append((posted["channel"], posted["ts"]))
            follow_ups.extend(r.id for r in made)
    return Alert(tuple(rows), tuple(dms), tuple(follow_ups))


def click(bot: Harness, alert: Alert, user: str, holder_index: int = 0) -> None:
    channel, ts = alert.dms[holder_index]
    answer = bot.send_payload(
        block_actions(
            user,
            ids.ONCALL_ACK,
            str(alert.row_ids[holder_index]),
            channel_id=channel,
            message_ts=ts,
        )
    )
    assert answer.status == 200


def events(session: Session, event: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.event == event)))


def follow_up_states(session: Session, alert: Alert) -> list[str]:
    return [session.get(OutboxMessage, row_id).state for row_id in alert.follow_up_ids]


def test_a_holder_acknowledges_and_every_holders_dm_shows_it(
    bot: Harness, alert: Alert, session_factory: sessionmaker[Session]
) -> None:
    assert len(alert.follow_up_ids) == 3  # two re-pages, one EDT-channel post
    click(bot, alert, slack_user("edt-bob"), holder_index=1)

    updates = wait_for(lambda: len(bot.calls("chat.update")) == 2 and bot.calls("chat.update"))
    assert sorted((u.args["channel"], u.args["ts"]) for u in updates) == sorted(alert.dms)
    for channel, _ in alert.dms:
        [dm] = bot.standin.messages(channel)
        shown = json.dumps(dm["blocks"])
        assert ids.ONCALL_ACK not in shown  # the button is gone
        assert dm["blocks"][-1]["text"]["text"] == (
            f":white_check_mark: *Acknowledged* by <@{slack_user('edt-bob')}> "
            "at Mon 16 Nov 2026 09:12 GMT."
        )
        assert dm["text"] == f"Handover referral {REFERRAL_ID}: new referral (on call)"
    assert bot.standin.ephemerals() == []
    assert bot.wakes

    with session_factory() as session:
        [ack] = session.scalars(select(OnCallAcknowledgement)).all()
        assert (ack.person_id, ack.acknowledged_at, ack.alert_row_id) == (
            "edt-bob",
            NOW,
            alert.row_ids[0],
        )
        [event] = events(session, "on_call_acknowledged")
        assert (event.at, event.actor, event.target) == (NOW, "edt-bob", "role:edt_manager")
        assert json.loads(event.detail)["holders"] == list(HOLDERS)
        assert follow_up_states(session, alert) == [RowState.CANCELLED] * 3
    assert SUMMARY not in bot.standin.all_text()


def test_a_second_click_is_told_who_was_first(
    bot: Harness, alert: Alert, session_factory: sessionmaker[Session]
) -> None:
    clickers = [
        threading.Thread(target=click, args=(bot, alert, slack_user(holder), index))
        for index, holder in enumerate(HOLDERS)
    ]
    for thread in clickers:
        thread.start()
    for thread in clickers:
        thread.join()

    [note] = wait_for(lambda: bot.standin.ephemerals())
    with session_factory() as session:
        [ack] = session.scalars(select(OnCallAcknowledgement)).all()
        assert len(events(session, "on_call_acknowledged")) == 1
    later = next(h for h in HOLDERS if h != ack.person_id)
    assert note["user"] == slack_user(later)
    assert note["blocks"][0]["text"]["text"] == (
        f"This alert was already acknowledged by <@{slack_user(ack.person_id)}> "
        "at Mon 16 Nov 2026 09:12 GMT."
    )


def test_anyone_but_a_holder_is_refused_privately_and_logged(
    bot: Harness, alert: Alert, session_factory: sessionmaker[Session]
) -> None:
    click(bot, alert, slack_user("hv-lead"))  # a manager, but not sent this alert
    click(bot, alert, "U0STRANGER")  # in Slack, not in the rota

    notes = wait_for(lambda: len(bot.standin.ephemerals()) == 2 and bot.standin.ephemerals())
    by_user = {n["user"]: n["blocks"][0]["text"]["text"] for n in notes}
    assert by_user == {
        slack_user("hv-lead"): "Only the people this on-call alert was sent to may acknowledge it.",
        "U0STRANGER": "You are not in the Handover rota.",
    }
    with session_factory() as session:
        refused = events(session, "response_refused")
        assert sorted(e.actor for e in refused) == ["U0STRANGER", "hv-lead"]
        assert {json.loads(e.detail)["response"] for e in refused} == {"on_call_acknowledged"}
        assert all(e.target == "role:edt_manager" for e in refused)
        assert events(session, "on_call_acknowledged") == []
        assert session.scalars(select(OnCallAcknowledgement)).all() == []
        assert follow_up_states(session, alert) == [RowState.PENDING] * 3
    assert bot.calls("chat.update") == []


def test_a_garbled_button_value_changes_nothing(
    bot: Harness, alert: Alert, session_factory: sessionmaker[Session]
) -> None:
    channel, ts = alert.dms[0]
    for value in ("not-a-number", "999999", str(alert.follow_up_ids[0] + 1000)):
        payload = block_actions(
            slack_user("edt-mgr"), ids.ONCALL_ACK, value, channel_id=channel, message_ts=ts
        )
        assert bot.send_payload(payload).status == 200
    notes = wait_for(lambda: len(bot.standin.ephemerals()) == 3 and bot.standin.ephemerals())
    assert {n["blocks"][0]["text"]["text"] for n in notes} == {
        "Handover does not know this on-call alert."
    }
    with session_factory() as session:
        assert session.scalars(select(OnCallAcknowledgement)).all() == []
        assert follow_up_states(session, alert) == [RowState.PENDING] * 3
