"""Step 3 of delivering a row: confirm it sent, and write what the log and the referral show.

In one short transaction for all the rows a batch delivered (`Posted`), and only while our
claim holds (else another dispatcher has the row and will find the message itself): the row is
sent, with where its message lives; a prompt is
logged `prompt_sent` (or `prompt_sent_late`), its target becomes prompted and its first
escalation step is scheduled; an on-call alert is logged `on_call_alerted` and, sent to a
holder, its re-page and EDT-channel post are scheduled (`on_call_repaged`,
`on_call_unanswered` when they go); a card's place is
kept on the referral; a step's message is logged as its step's event. The log names where the
message went as its channel describes it (`detail.channel`: a Slack conversation, or `"email"`),
the channels that could not reach the person first, and the copies owed by another channel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import ChannelError, Sent
from bot.delivery import escalation, outbox
from bot.delivery.compose import Delivery, DeliveryContext
from bot.delivery.compose.copy import message_record
from bot.delivery.kinds import (
    ACKNOWLEDGED_ALERT_KINDS,
    ACTOR,
    OutboxKind,
    Outcome,
    RowState,
    TargetState,
)
from bot.delivery.pacing import Pacer
from bot.delivery.reads import preload, store_of, target_of
from bot.delivery.results import RowResult
from bot.delivery.send import remove_late_copy
from bot.models import OutboxMessage, Referral
from bot.services import audit
from bot.services.oncall import acknowledgement_of

logger = logging.getLogger(__name__)

LATE_GRACE = timedelta(minutes=2)
# The event a delivered message of these kinds is logged as (a prompt has its own, below).
EVENT_WHEN_DELIVERED = {
    OutboxKind.ON_CALL: "on_call_alerted",
    OutboxKind.INFO_NOTICE: "information_notice_sent",  # docs/closing-the-loop.md
    OutboxKind.ONCALL_REPAGE: "on_call_repaged",
    OutboxKind.ONCALL_UNANSWERED: "on_call_unanswered",
}


def sent_at(delivery: Delivery, found: bool, now: datetime) -> datetime:
    """When the message reached the channel: now, or for one an earlier attempt sent (found
    there), when the latest earlier attempt began (rows from before that bookkeeping: the first
    claim), never before the row was due, never after now."""
    posted_at = delivery.earlier_attempt_at or delivery.first_claimed_at
    if not found or posted_at is None:
        return now
    if delivery.due_at is not None and delivery.due_at > posted_at:
        posted_at = delivery.due_at
    return min(posted_at, now)


@dataclass(frozen=True)
class Posted:
    """A row whose message is in its channel (sent now, or found there), not yet confirmed."""

    delivery: Delivery
    sent: Sent
    found: bool
    at: datetime  # when the channel answered


def confirm(
    ctx: DeliveryContext, session_factory: sessionmaker[Session], posted: Sequence[Posted]
) -> list[RowResult]:
    """Settle delivered rows and record them, all in one transaction (a batch's reads shared,
    `reads.preload`); LOST for a row whose claim ran out meanwhile."""
    with session_factory.begin() as session:
        row_ids = [p.delivery.row_id for p in posted]
        held = outbox.owned_many(session, row_ids, ctx.instance_id)
        # Sent, though cancelled in our batch once the send was under way: recorded as sent.
        cancelled = outbox.cancelled_while_sending(
            session, [i for i in row_ids if i not in held], ctx.instance_id
        )
        settling = {**cancelled, **held}
        preload(session, settling.values(), tz=ctx.settings.timezone)
        results = [_settle(ctx, session, p, settling.get(p.delivery.row_id)) for p in posted]
        sent_prompts = [
            (held[p.delivery.row_id], p.at)
            for p, result in zip(posted, results, strict=True)
            if p.delivery.kind == OutboxKind.PROMPT
            and result.outcome is Outcome.DELIVERED
            and p.delivery.row_id in held
        ]
        # The escalation clock runs from each send; a step already past is performed at once.
        escalation.schedule_escalations(session, sent_prompts, settings=ctx.settings)
    return results


def record_found(
    ctx: DeliveryContext,
    session: Session,
    row: OutboxMessage,
    delivery: Delivery,
    found: Sent,
    now: datetime,
) -> RowResult:
    """A row cancelled under a claim whose holder died (`row`, cancelled and locked), its
    message found in the channel (reconcile.py): recorded as sent, as a send under way when
    the cancellation came is, with `cancelled_while_sending`; nothing follows from it."""
    preload(session, [row], tz=ctx.settings.timezone)
    return _settle(ctx, session, Posted(delivery, found, True, now), row)


def _settle(
    ctx: DeliveryContext, session: Session, posted: Posted, row: OutboxMessage | None
) -> RowResult:
    """Settle one delivered row we still hold (`row`; None: the claim is lost), or one
    cancelled in our batch after its send began (`row` cancelled: sent all the same)."""
    delivery, sent, found, now = posted.delivery, posted.sent, posted.found, posted.at
    # Why the row was no longer owed, when it was cancelled as its send went out.
    cancelled_as = None
    if row is not None and row.state == RowState.CANCELLED:
        cancelled_as = row.last_error or "cancelled"
    when = sent_at(delivery, found, now)
    late = (
        delivery.kind == OutboxKind.PROMPT
        and delivery.due_at is not None
        and when - delivery.due_at > LATE_GRACE
    )
    if row is None:
        # Our lease ran out and another dispatcher took the row; it will find this
        # message in the channel and confirm it, so nothing is logged twice (or, if it
        # sent the row too, our copy is taken back: `take_back_late_copy`).
        logger.warning("lost the claim on row %s after sending it", delivery.row_id)
        return RowResult(delivery.row_id, delivery.kind, Outcome.LOST, reason="claim lost")
    outbox.settle_sent(row, now=when, channel=sent.conversation, ts=sent.ts, late=late)
    referral = session.get(Referral, delivery.referral_id)
    assert referral is not None
    where = ctx.channels.named(delivery.channel).describe(sent)
    if found:
        where["found_in_history"] = True
        where["found_at"] = now.astimezone(ctx.settings.timezone).isoformat()
    elif delivery.check_history:
        # An earlier attempt may have sent it and it was not found (a relay cannot be
        # asked at all): sent again, under the same identity (an email's Message-ID).
        where["sent_again"] = True
    passed_over = outbox.unreachable_on(row)
    if passed_over:
        where["unreachable_on"] = passed_over
    if cancelled_as is not None:
        # No longer owed, but it reached the channel: the log says so; nothing follows from it
        # (no copy, re-page or escalation), and the card is redrawn as after the cancellation.
        where["cancelled_while_sending"] = cancelled_as
        logger.warning(
            "%s %s was cancelled (%s) while its send was under way: sent, and recorded so",
            delivery.kind,
            delivery.row_id,
            cancelled_as,
        )
        outbox.redraw_card(session, referral, now, edt_channel=ctx.settings.edt_channel)
    elif delivery.person is not None and delivery.copies:
        where["copies"] = list(delivery.copies)
        for name in delivery.copies:
            outbox.enqueue_copy(
                session,
                row,
                channel=name,
                person_id=delivery.person,
                message=message_record(delivery.message),
                now=now,
            )
    if (
        delivery.kind in ACKNOWLEDGED_ALERT_KINDS
        and delivery.person is not None
        and cancelled_as is None
    ):
        _page_until_acknowledged(ctx, session, row, when)
    if delivery.kind == OutboxKind.PROMPT:
        _prompt_sent(ctx, session, row, referral, delivery, where, when=when, now=now)
    elif delivery.kind in EVENT_WHEN_DELIVERED:
        audit.record(
            session,
            EVENT_WHEN_DELIVERED[delivery.kind],
            at=when,
            referral_id=referral.referral_id,
            actor=ACTOR,
            recipient=delivery.recipient,
            target=delivery.target,
            detail={**delivery.log_detail, **where},
        )
    elif delivery.kind == OutboxKind.CARD and referral.card_ts is None:
        referral.card_channel, referral.card_ts = sent.conversation, sent.ts
    elif delivery.kind == OutboxKind.STEP_MESSAGE:
        # Slack step messages are logged as they always were; another channel says so.
        other = delivery.channel != ctx.channels.for_rooms().name
        if not other and cancelled_as is not None:
            where = {"cancelled_while_sending": cancelled_as}
        escalation.record_step_message(
            session,
            row,
            delivered=True,
            error=None,
            now=now,
            where=where if other or cancelled_as is not None else None,
        )
    return RowResult(delivery.row_id, delivery.kind, Outcome.DELIVERED, late=late, found=found)


def take_back_late_copy(
    ctx: DeliveryContext,
    session_factory: sessionmaker[Session],
    delivery: Delivery,
    sent: Sent,
    now: datetime,
    pacer: Pacer | None = None,
) -> bool:
    """We posted the row, then found our claim lost (this process froze between the check of
    its claim and the send, and another dispatcher took the row over). If that one sent the
    row too, our copy is deleted and the deletion logged (`duplicate_deleted`); True then.
    Otherwise ours is the only copy, and the row's holder finds it by its tag.

    Called with no transaction open: it talks to the channel.
    """
    channel = ctx.channels.named(delivery.channel)
    try:
        taken_back = remove_late_copy(channel, delivery, sent, pacer)
    except ChannelError:
        logger.exception("could not look for or delete a late copy of row %s", delivery.row_id)
        return False
    if taken_back is None or not taken_back[1]:
        return False
    kept = taken_back[0]
    detail: dict[str, Any] = {
        "kind": str(delivery.kind),
        "row_id": delivery.row_id,
        **channel.describe(sent),
        "kept_ts": kept.ts,
        "dispatcher": ctx.instance_id,
    }
    with session_factory.begin() as session:
        record_row_event(session, "duplicate_deleted", delivery, at=now, detail=detail)
    return True


def record_row_event(
    session: Session, event: str, delivery: Delivery, *, at: datetime, detail: dict[str, Any]
) -> None:
    """Log `event` about one row's message (any kind), naming whom it went to and its target."""
    audit.record(
        session,
        event,
        at=at,
        referral_id=delivery.referral_id,
        actor=ACTOR,
        # the person (a step's message names only them) or the room it went to
        recipient=delivery.recipient or delivery.person or delivery.address,
        target=delivery.target,
        detail=detail,
    )


def _page_until_acknowledged(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, when: datetime
) -> None:
    """An on-call DM is sent: it is owed again, then to the EDT channel, until acknowledged
    (its alert may already be, by another holder whose DM went first)."""
    key = outbox.alert_key(row)
    if key is None or acknowledgement_of(session, row.referral_id, key) is not None:
        return
    outbox.enqueue_oncall_follow_ups(
        session, row, sent_at=when, repage_after=ctx.settings.oncall_repage
    )


def _prompt_sent(
    ctx: DeliveryContext,
    session: Session,
    row: OutboxMessage,
    referral: Referral,
    delivery: Delivery,
    where: dict[str, Any],
    *,
    when: datetime,
    now: datetime,
) -> None:
    tz = ctx.settings.timezone
    detail: dict[str, Any] = {
        "via": delivery.via,
        "due_at": delivery.due_at.astimezone(tz).isoformat() if delivery.due_at else None,
        "sent_at": when.astimezone(tz).isoformat(),
        "prompt_id": row.id,
        **delivery.log_detail,
        **where,
    }
    late = row.late
    if late and delivery.due_at is not None:
        detail["delay_minutes"] = int((when - delivery.due_at).total_seconds() // 60)
    audit.record(
        session,
        "prompt_sent_late" if late else "prompt_sent",
        at=when,
        referral_id=referral.referral_id,
        actor=ACTOR,
        recipient=delivery.recipient,
        target=delivery.target,
        detail=detail,
        rota_version=store_of(session).current_rota_version(),
    )
    target = target_of(session, row)
    if target is not None and target.state in (TargetState.HELD, TargetState.FAILED):
        target.state = TargetState.PROMPTED
        outbox.redraw_card(session, referral, now, edt_channel=ctx.settings.edt_channel)
