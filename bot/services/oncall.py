"""On call: who holds each role now (`/handover oncall`), and acknowledging on-call alerts (the
service behind the `handover_oncall_ack` button).

An on-call alert (docs/reference/slack.md, "On-call alerts") is one alert row per holder, all
with the same `alert_key`. One acknowledgement answers for the alert: whichever holder clicks
first stops the re-paging of every holder (an EDT manager expects one person to take an alert,
and the others to see who did), and every holder's DM then shows who acknowledged it. Only a
holder of the alert may acknowledge it; anyone else is refused and the attempt is logged
(`response_refused`), as for prompts.

Functions here take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.kinds import ACKNOWLEDGED_ALERT_KINDS, OutboxKind, RowState
from bot.models import OnCallAcknowledgement, OutboxMessage, Referral
from bot.services import audit
from bot.services.directory import person_for_slack_user
from bot.services.logbook import ReferralFacts
from bot.settings import Settings
from rota.models import Person
from rota.store import RotaStore

AckStatus = Literal["recorded", "already", "refused", "not_found"]
SLACK_CHANNEL = "slack"  # an outbox row's channel whose messages show the acknowledgement


@dataclass(frozen=True)
class AlertMessage:
    """One Slack DM of the alert, and what it says (to draw it again, acknowledged)."""

    channel: str
    ts: str
    kind: str  # the alert's kind (on_call, long_gap, …)
    repage: bool
    facts: dict


@dataclass(frozen=True)
class AckOutcome:
    """What a click on `handover_oncall_ack` came to, and what Slack should now show."""

    status: AckStatus
    slack_user_id: str
    at: datetime
    referral: ReferralFacts | None = None
    kind: str | None = None
    target: str | None = None
    acknowledged_by: str | None = None  # person_id
    acknowledged_by_slack: str | None = None
    acknowledged_at: datetime | None = None
    messages: tuple[AlertMessage, ...] = ()
    reason: str = ""

    @property
    def who(self) -> str:
        """Who acknowledged, as the messages show it: a mention, else their person_id."""
        if self.acknowledged_by_slack:
            return f"<@{self.acknowledged_by_slack}>"
        return self.acknowledged_by or "?"


def acknowledgement_of(
    session: Session, referral_id: str, key: str
) -> OnCallAcknowledgement | None:
    """The acknowledgement of one alert, if someone gave it."""
    return session.scalars(
        select(OnCallAcknowledgement).where(
            OnCallAcknowledgement.referral_id == referral_id,
            OnCallAcknowledgement.alert_key == key,
        )
    ).first()


def acknowledged_label(session: Session, ack: OnCallAcknowledgement) -> str:
    """Who acknowledged, as a message shows it: a Slack mention, else their person_id."""
    if ack.slack_user_id:
        return f"<@{ack.slack_user_id}>"
    person = session.get(Person, ack.person_id)
    if person is not None and person.slack_user_id:
        return f"<@{person.slack_user_id}>"
    return ack.person_id


def _target_of(row: OutboxMessage) -> str | None:
    detail = outbox.load_detail(row)
    kind = detail.get("alert_kind", row.kind)
    return detail.get("role") if kind == OutboxKind.ON_CALL else detail.get("target")


def acknowledge_alert(
    session: Session,
    row_id: int | None,
    slack_user_id: str,
    *,
    now: datetime,
    workspace: str | None = None,
) -> AckOutcome:
    """Record that `slack_user_id` (of `workspace`; None: the home one) acknowledged the alert
    of row `row_id` (any holder's row of it), cancel its pending re-pages and EDT-channel post,
    and say which messages to update."""
    row = session.get(OutboxMessage, row_id) if row_id is not None else None
    key = outbox.alert_key(row) if row is not None else None
    if row is None or key is None:
        return AckOutcome("not_found", slack_user_id, now, reason="no such on-call alert")
    referral = session.get(Referral, row.referral_id)
    assert referral is not None
    facts = ReferralFacts.of(referral)
    rows = outbox.rows_of_alert(session, row.referral_id, key)
    alerts = [r for r in rows if r.kind in ACKNOWLEDGED_ALERT_KINDS]
    first = alerts[0] if alerts else row
    kind = str(outbox.load_detail(row).get("alert_kind", row.kind))
    target = _target_of(first)
    holders = list(dict.fromkeys(r.recipient_id for r in alerts if r.recipient_id))
    person = person_for_slack_user(session, slack_user_id, workspace)
    common = {"referral": facts, "kind": kind, "target": target}
    if person is None or person.person_id not in holders:
        audit.record(
            session,
            "response_refused",
            at=now,
            referral_id=referral.referral_id,
            actor=person.person_id if person is not None else slack_user_id,
            target=target,
            detail={
                "response": "on_call_acknowledged",
                "alert": kind,
                "alert_row_id": first.id,
                "slack_user": slack_user_id,
                "in_rota": person is not None,
            },
            rota_version=RotaStore(session).current_rota_version(),
        )
        reason = (
            "You are not in the Handover rota."
            if person is None
            else "Only the people this on-call alert was sent to may acknowledge it."
        )
        return AckOutcome("refused", slack_user_id, now, reason=reason, **common)
    earlier = acknowledgement_of(session, referral.referral_id, key)
    if earlier is None:
        ack = OnCallAcknowledgement(
            referral_id=referral.referral_id,
            alert_key=key,
            kind=kind,
            alert_row_id=first.id,
            person_id=person.person_id,
            slack_user_id=slack_user_id,
            acknowledged_at=now,
        )
        try:
            with session.begin_nested():
                session.add(ack)
        except IntegrityError:
            earlier = acknowledgement_of(session, referral.referral_id, key)
    if earlier is not None:
        return AckOutcome(
            "already",
            slack_user_id,
            now,
            acknowledged_by=earlier.person_id,
            acknowledged_by_slack=earlier.slack_user_id,
            acknowledged_at=earlier.acknowledged_at,
            messages=_messages(rows),
            **common,
        )
    cancelled = outbox.cancel_alert_follow_ups(session, referral.referral_id, key)
    repages = sum(
        1 for r in rows if r.kind == OutboxKind.ONCALL_REPAGE and r.state == RowState.SENT
    )
    audit.record(
        session,
        "on_call_acknowledged",
        at=now,
        referral_id=referral.referral_id,
        actor=person.person_id,
        recipient=person.person_id,
        target=target,
        detail={
            "alert": kind,
            "alert_row_id": first.id,
            "holders": holders,
            "slack_user": slack_user_id,
            "acknowledged_at": now.isoformat(),
            "first_sent_at": first.sent_at.isoformat() if first.sent_at else None,
            "repages_sent": repages,
            "follow_ups_cancelled": cancelled,
        },
        rota_version=RotaStore(session).current_rota_version(),
    )
    return AckOutcome(
        "recorded",
        slack_user_id,
        now,
        acknowledged_by=person.person_id,
        acknowledged_by_slack=slack_user_id,
        acknowledged_at=now,
        messages=_messages(rows),
        **common,
    )


def _messages(rows: list[OutboxMessage]) -> tuple[AlertMessage, ...]:
    """The alert's DMs in Slack (every holder's, and the re-pages), to show the acknowledgement."""
    found = []
    for row in rows:
        if row.kind == OutboxKind.ONCALL_UNANSWERED:
            continue
        if row.message_channel and row.message_ts and row.channel in (None, SLACK_CHANNEL):
            detail = outbox.load_detail(row)
            found.append(
                AlertMessage(
                    row.message_channel,
                    row.message_ts,
                    str(detail.get("alert_kind", row.kind)),
                    row.kind == OutboxKind.ONCALL_REPAGE,
                    {k: detail.get(k) for k in ("role", "target", "person_id", "detail")},
                )
            )
    return tuple(found)


# ----- who is on call now ---------------------------------------------------------------------


@dataclass(frozen=True)
class OnCallHolder:
    """Someone on call now, and until when."""

    person_id: str
    name: str
    slack_user_id: str | None
    until: datetime


@dataclass(frozen=True)
class OnCallAnswer:
    """Who holds each role now; `unknown_role` is set when the asked-for role was never rostered."""

    at: datetime
    roles: tuple[tuple[str, tuple[OnCallHolder, ...]], ...] = ()
    unknown_role: str | None = None


def on_call_now(
    session: Session, *, now: datetime, settings: Settings, role: str | None = None
) -> OnCallAnswer:
    """Who holds `role` on shift at `now`; without a role, every role with a shift covering
    `now`: the alert roles first (listed even when nobody holds them), then the others sorted."""
    store = RotaStore(session)
    if role is not None:
        role = role.strip().lower().removeprefix("role:")
        if not store.role_known(role):
            return OnCallAnswer(now, unknown_role=role)
        on_shift = store.people_on_shift(now, role)
        roles = [role]
    else:
        on_shift = store.people_on_shift(now)
        alert_roles = list(dict.fromkeys(settings.alert_roles))
        others = sorted({shift.role for _, shift in on_shift} - set(alert_roles))
        roles = alert_roles + others
    holders: dict[str, dict[str, OnCallHolder]] = {name: {} for name in roles}
    for person, shift in on_shift:
        by_person = holders.get(shift.role)
        if by_person is None:
            continue
        known = by_person.get(person.person_id)
        if known is None or shift.end_at > known.until:
            by_person[person.person_id] = OnCallHolder(
                person.person_id, person.name, person.slack_user_id, shift.end_at
            )
    return OnCallAnswer(now, tuple((name, tuple(holders[name].values())) for name in roles))
