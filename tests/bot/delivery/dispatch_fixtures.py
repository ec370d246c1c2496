"""The world the delivery tests dispatch in, built directly with the models.

- The rota (`add_rota`, rota version 1): hv-north (health, Mon-Fri 09:00-17:00): hv-jsmith
  (Jo Smith, Slack U0HV1), gp-lee (Dr Lee, no Slack user: found by g.lee@gp.example);
  edt (social care, shift-only): edt-mgr (Pat Manager, U0MGR).
- A referral (`add_referral`, HO-K7M3QX, received Sat 9 Jan 2027 02:14) whose summary must never
  reach Slack; its targets' prompts (`add_prompt_for`) and any other outbox row (`add_row`).

The `clock`, `slack` and `settings` fixtures of this world are in conftest.py beside this file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.slack import make_web_client
from bot.clock import FixedClock
from bot.delivery import outbox
from bot.delivery.dispatcher import Dispatcher, DispatchStats
from bot.delivery.kinds import RowState
from bot.delivery.pacing import Pacer
from bot.models import AuditEvent, OutboxMessage, Referral
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from rota.models import Person, RotaVersion
from tests.bot.factories import new_referral, new_target
from tests.rota.factories import new_person, new_team

MONDAY_9 = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)  # 09:00 GMT on an ordinary Monday
TOKEN = "xoxb-handover-test"
EDT = "C0EDT"
SUMMARY = "SECRET-NARRATIVE baby Sam at 12 Acacia Avenue"
REFERRAL_ID = "HO-K7M3QX"


def make_dispatcher(
    settings: Settings,
    factory: sessionmaker[Session],
    clock,
    name: str = "test",
    timeout: int = 2,
) -> Dispatcher:
    client = make_web_client(settings, timeout=timeout)
    return Dispatcher(settings, factory, client, clock, instance_id=name, interval_seconds=30)


def add_rota(session: Session) -> None:
    session.add(RotaVersion(version=1, imported_at=MONDAY_9, files="test", summary="{}"))
    session.add(new_team("hv-north", name="Health visiting North", agency="NHS"))
    session.add(
        new_team("edt", name="EDT", agency="Council", agency_type="social_care", hours="none")
    )
    session.flush()  # teams before the people who belong to them
    add_person(session, "hv-jsmith", "Jo Smith", "U0HV1")
    add_person(session, "gp-lee", "Dr Lee", None, email="g.lee@gp.example")
    add_person(session, "edt-mgr", "Pat Manager", "U0MGR", team_id="edt")
    session.flush()


def add_person(
    session: Session,
    person_id: str,
    name: str,
    slack_user: str | None,
    *,
    email: str | None = None,
    team_id: str = "hv-north",
) -> None:
    email = email or f"{person_id}@example.org"
    session.add(new_person(person_id, team_id, name=name, slack_user=slack_user, email=email))


def add_referral(
    session: Session, referral_id: str = REFERRAL_ID, urgency: str = "standard"
) -> Referral:
    """A referral (standard: its prompts escalate at +60/+120/+240 working minutes)."""
    referral = new_referral(
        referral_id,
        datetime(2027, 1, 9, 2, 14, tzinfo=UTC),
        referred_at=datetime(2027, 1, 9, 2, 10, tzinfo=UTC),
        urgency=urgency,
        summary=SUMMARY,
    )
    session.add(referral)
    session.flush()
    return referral


def add_row(session: Session, kind: str, **fields: Any) -> OutboxMessage:
    """A pending outbox row of `kind`, of the referral HO-K7M3QX and due at Monday 09:00 unless
    `fields` say otherwise."""
    fields.setdefault("referral_id", REFERRAL_ID)
    fields.setdefault("due_at", MONDAY_9)
    row = OutboxMessage(kind=kind, state=RowState.PENDING, attempts=0, **fields)
    session.add(row)
    session.flush()
    return row


def add_prompt_for(
    session: Session,
    person_id: str,
    due_at: datetime = MONDAY_9,
    *,
    referral_id: str = REFERRAL_ID,
    position: int = 0,
) -> int:
    """A held target `person:ID` and its pending prompt; returns the prompt's id."""
    target = new_target(referral_id, f"person:{person_id}", person_id, due_at, position=position)
    session.add(target)
    session.flush()
    detail = json.dumps({"planned_via": "self", "planned_recipient": person_id})
    prompt = add_row(
        session,
        "prompt",
        referral_id=referral_id,
        target_id=target.id,
        due_at=due_at,
        detail=detail,
    )
    return prompt.id


def setup_one_prompt(factory: sessionmaker[Session], due_at: datetime = MONDAY_9) -> int:
    with factory.begin() as session:
        add_rota(session)
        add_referral(session)
        return add_prompt_for(session, "hv-jsmith", due_at)


def is_prompt(message: dict) -> bool:
    """A prompt DM (escalation steps, alerts and cards have their own event types)."""
    return (message.get("metadata") or {}).get("event_type") == "handover_prompt"


def messages_for(slack: SlackStandIn, prompt_id: int) -> list[dict]:
    """The prompt's own messages (its escalation steps name its prompt_id too)."""
    return [
        m
        for m in slack.messages()
        if is_prompt(m) and m["metadata"]["event_payload"]["prompt_id"] == prompt_id
    ]


def events(factory: sessionmaker[Session], *names: str) -> list[AuditEvent]:
    with factory() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if names:
            query = query.where(AuditEvent.event.in_(names))
        return list(session.scalars(query))


def run_until_quiet(dispatcher: Dispatcher, clock: FixedClock, passes: int = 12) -> DispatchStats:
    """Passes with the clock moving past each backoff, until nothing is left to do."""
    total = DispatchStats()
    for _ in range(passes):
        total.add(dispatcher.run_once())
        with dispatcher.session_factory() as session:
            due = outbox.next_due_at(session)
        if due is None:
            break
        clock.set(max(clock.now(), due) + timedelta(seconds=1))
    return total


@contextmanager
def writing_meanwhile(factory: sessionmaker[Session]) -> Iterator[None]:
    """Another process in the middle of a write (Jo Smith's name changed, not committed): on
    SQLite it holds the write lock, so whatever takes that lock meanwhile waits out the busy
    timeout and fails with "database is locked"."""
    with factory.begin() as writer:
        writer.get(Person, "hv-jsmith").name = "Jo Smith-Jones"
        writer.flush()
        yield


def hold_the_pacers_clock(monkeypatch: pytest.MonkeyPatch, pacer: Pacer, until: list) -> None:
    """The pacer's clock stands still from now until `until` holds something: its buckets
    cannot refill however long a batch takes to reach its take on a loaded machine (over a
    second at 1 message a second, and a token would be there without a wait)."""
    held_at = time.time()
    monkeypatch.setattr(pacer, "_now", lambda: time.time() if until else held_at)
