"""Raising and composing alerts: on call, long gap, unroutable, unreachable, delivery failure;
and the follow-ups of an on-call alert nobody acknowledged (a re-page, then a post in the EDT
channel).

An on-call alert is a DM to the holder of an alert role; an `unreachable` alert (someone was
passed over) goes to every holder of an alert role on shift now; the others go to the EDT
channel (or, from intake, to the on-call holder the plan names). `raise_alert` is the one way
delivery raises an alert; each is an outbox row, delivered like everything else. Every on-call
alert DM to a holder (not a delivery failure) carries the `handover_oncall_ack` button
(docs/reference/slack.md, "On-call alerts").
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.channels.base import Message
from bot.delivery import outbox
from bot.delivery.compose.base import (
    Composed,
    DeliveryContext,
    NeedsAddress,
    cancel,
    delivery_of,
    fail,
    reach_person,
)
from bot.delivery.kinds import ACKNOWLEDGED_ALERT_KINDS, OutboxKind, RowState
from bot.delivery.metadata import alert_tag
from bot.delivery.reads import store_of
from bot.models import OutboxMessage, Referral
from bot.services.oncall import acknowledged_label, acknowledgement_of
from bot.settings import Settings
from handlers.blocks.alerts import build_alert_message, build_unanswered_message
from rota.models import Person
from rota.planner import on_call_at

logger = logging.getLogger(__name__)


def on_call_holders(
    session: Session, settings: Settings, now: datetime, *, excluding: Collection[str] = ()
) -> list[str]:
    """The people on shift now in an alert role (HANDOVER_ALERT_ROLES), but those excluded."""
    holders = on_call_at(store_of(session), settings.alert_roles, now, settings.timezone)
    return [p for p in dict.fromkeys(p for _, p in holders) if p not in excluding]


def raise_alert(
    session: Session,
    settings: Settings,
    kind: OutboxKind,
    referral_id: str,
    now: datetime,
    *,
    to_on_call: bool = False,
    not_to: Collection[str] = (),
    **detail: Any,
) -> list[str]:
    """An alert, delivered by the outbox like everything else: to the EDT channel, or with
    `to_on_call` a DM to each on-call holder (but those `not_to` names), and the EDT channel
    when nobody is on call. Returns whom it goes to (person ids, or the channel)."""
    holders = on_call_holders(session, settings, now, excluding=not_to) if to_on_call else []
    for holder in holders:
        outbox.enqueue_alert(session, kind, referral_id, due_at=now, recipient_id=holder, **detail)
    if holders:
        return holders
    if not settings.edt_channel:
        logger.error(
            "%s for %s (%s) and no HANDOVER_EDT_CHANNEL to say so",
            kind,
            referral_id,
            detail.get("target"),
        )
        return []
    outbox.enqueue_alert(
        session, kind, referral_id, due_at=now, address=settings.edt_channel, **detail
    )
    return [settings.edt_channel]


def acknowledgement_fields(session: Session, row: OutboxMessage) -> dict[str, Any]:
    """An on-call DM's button (valued with the row of its alert it was first sent as), or, once
    its alert was acknowledged, who took it; nothing for an alert to a room."""
    key = outbox.alert_key(row)
    if key is None:
        return {}
    ack = acknowledgement_of(session, row.referral_id, key)
    if ack is not None:
        return {"acknowledged": (acknowledged_label(session, ack), ack.acknowledged_at)}
    return {"ack_row_id": outbox.load_detail(row).get("alert_row_id", row.id)}


def compose_alert(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """The alert, to its on-call holder's DM or to the EDT channel; a re-page is the alert
    again to the same holder (unless someone acknowledged it meanwhile)."""
    detail = outbox.load_detail(row)
    check = outbox.needs_check(row)
    kind = OutboxKind(detail.get("alert_kind", row.kind))
    repage = row.kind == OutboxKind.ONCALL_REPAGE
    if repage and _acknowledged(session, row):
        return cancel(ctx, session, row, "acknowledged")
    target = detail.get("role") if kind == OutboxKind.ON_CALL else detail.get("target")
    channel = ctx.channels.for_rooms()
    address = row.address or ctx.settings.edt_channel
    if row.recipient_id:
        if check and row.address:
            # An earlier attempt chose the DM: look (and post) where it would have posted.
            channel, address = ctx.channels.named(row.channel), row.address
        else:
            reached = reach_person(ctx, session, row, row.recipient_id)
            if isinstance(reached, NeedsAddress):
                return reached
            channel, address = reached
    if not address:
        logger.error(
            "no channel for %s alert of %s: set HANDOVER_EDT_CHANNEL",
            row.kind,
            referral.referral_id,
        )
        return fail(ctx, session, row, now, "no channel")
    row.address, row.channel = address, channel.name
    built = build_alert_message(
        kind,
        referral,
        tz=ctx.settings.timezone,
        target=target,
        recipient=detail.get("person_id"),
        detail=detail.get("detail"),
        reason=detail.get("reason"),
        channel=detail.get("channel"),
        instead=detail.get("instead"),
        what=detail.get("what"),
        repage=repage,
        **acknowledgement_fields(session, row),
    )
    message = Message(
        built["text"], built["blocks"], alert_tag(row.kind, referral.referral_id, row.id)
    )
    to_person = bool(row.recipient_id)
    log_detail: dict[str, Any] = {"detail": detail["detail"]} if detail.get("detail") else {}
    if repage:
        log_detail = {
            "alert": str(kind),
            "alert_row_id": detail.get("alert_row_id"),
            "alert_sent_at": _local(detail.get("alert_sent_at"), ctx),
        }
    return delivery_of(
        row,
        channel,
        address,
        message,
        person=row.recipient_id if to_person else None,
        recipient=row.recipient_id,
        target=target,
        log_detail=log_detail,
    )


def compose_unanswered(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """An on-call alert nobody acknowledged, twice sent: a post in the EDT channel naming every
    holder who did not answer (one post an alert, whichever holder's row made it)."""
    if _acknowledged(session, row):
        return cancel(ctx, session, row, "acknowledged")
    detail = outbox.load_detail(row)
    key = detail["alert_key"]
    earlier = [
        other
        for other in outbox.rows_of_alert(
            session, row.referral_id, key, frozenset({OutboxKind.ONCALL_UNANSWERED})
        )
        if other.id < row.id and other.state != RowState.CANCELLED
    ]
    if earlier:
        return cancel(ctx, session, row, f"posted by row {earlier[0].id}")
    address = row.address or ctx.settings.edt_channel
    if not address:
        logger.error(
            "nobody acknowledged the %s alert of %s and there is no HANDOVER_EDT_CHANNEL to say so",
            detail.get("alert_kind"),
            referral.referral_id,
        )
        return cancel(ctx, session, row, "no EDT channel")
    channel = ctx.channels.for_rooms()
    row.address, row.channel = address, channel.name
    kind = OutboxKind(detail.get("alert_kind", OutboxKind.ON_CALL))
    target = detail.get("role") if kind == OutboxKind.ON_CALL else detail.get("target")
    alerts = outbox.rows_of_alert(session, row.referral_id, key, ACKNOWLEDGED_ALERT_KINDS)
    holders = list(dict.fromkeys(a.recipient_id for a in alerts if a.recipient_id))
    labels = [_holder_label(session, person_id, alerts) for person_id in holders]
    sent_at = outbox.parse_instant(detail.get("alert_sent_at")) or now
    built = build_unanswered_message(
        kind, referral, tz=ctx.settings.timezone, target=target, holders=labels, sent_at=sent_at
    )
    message = Message(
        built["text"], built["blocks"], alert_tag(row.kind, referral.referral_id, row.id)
    )
    return delivery_of(
        row,
        channel,
        address,
        message,
        target=target,
        log_detail={
            "alert": str(kind),
            "alert_row_id": detail.get("alert_row_id"),
            "alert_sent_at": _local(detail.get("alert_sent_at"), ctx),
            "not_answered_by": holders,
        },
    )


def _acknowledged(session: Session, row: OutboxMessage) -> bool:
    key = outbox.alert_key(row)
    return key is not None and acknowledgement_of(session, row.referral_id, key) is not None


def _holder_label(session: Session, person_id: str, alerts: list[OutboxMessage]) -> str:
    """A holder as the EDT channel sees them: a mention, else their rota id."""
    for alert in alerts:
        address = alert.address or ""
        in_slack = alert.channel == "slack" and address[:1] in ("U", "W")
        if alert.recipient_id == person_id and in_slack:
            return f"<@{address}>"
    person = session.get(Person, person_id)
    if person is not None and person.slack_user_id:
        return f"<@{person.slack_user_id}>"
    return person_id


def _local(text: str | None, ctx: DeliveryContext) -> str | None:
    instant = outbox.parse_instant(text)
    return instant.astimezone(ctx.settings.timezone).isoformat() if instant else None
