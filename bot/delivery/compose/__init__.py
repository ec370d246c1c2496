"""Step 1 of delivering a row: deciding, in one short transaction, what the row means now.

A claimed row becomes a `Delivery` (which message goes to which address on which channel), a
`NeedsAddress` (a person only the channel can find, by a call made outside the transaction), or
`Settled` (cancelled, rescheduled, deferred, failed, or an escalation step that became its
messages). One module per row kind: `prompt`, `alert`, `card`, `escalation`; Block Kit comes
from the pure `handlers.blocks` builders.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.compose import alert, card, copy, escalation, loop, prompt
from bot.delivery.compose.base import (
    Composed,
    Composer,
    Delivery,
    DeliveryContext,
    NeedsAddress,
    Settled,
    contact_of,
    fail,
    sending_record,
)
from bot.delivery.kinds import (
    ALERT_ROW_KINDS,
    LOOP_MESSAGE_KINDS,
    ONCALL_FOLLOW_UP_KINDS,
    OutboxKind,
    Outcome,
)
from bot.delivery.reads import preload
from bot.models import OutboxMessage, Referral, ReferralStatus

__all__ = [
    "Composed",
    "Delivery",
    "DeliveryContext",
    "NeedsAddress",
    "Settled",
    "compose",
    "compose_batch",
]

logger = logging.getLogger(__name__)

COMPOSERS: dict[str, Composer] = {
    OutboxKind.PROMPT: prompt.compose_prompt,
    OutboxKind.CARD: card.compose_card,
    OutboxKind.ESCALATION: escalation.compose_step,
    OutboxKind.STEP_MESSAGE: escalation.compose_step_message,
    OutboxKind.COPY: copy.compose_copy,
    **dict.fromkeys(ALERT_ROW_KINDS, alert.compose_alert),
    OutboxKind.ONCALL_REPAGE: alert.compose_alert,
    OutboxKind.ONCALL_UNANSWERED: alert.compose_unanswered,
    **dict.fromkeys(LOOP_MESSAGE_KINDS, loop.compose_loop_message),
    OutboxKind.CONTACT_DEADLINE: loop.compose_contact_deadline,
}
# What a closed referral no longer owes (a card shows the close; a step decides for itself; the
# close itself cancels a step's messages that chase, `outbox.cancel_owed_by`, and a breach's
# messages go: the breach happened).
_CANCELLED_WHEN_CLOSED = frozenset(
    {
        OutboxKind.PROMPT,
        OutboxKind.COPY,
        *ALERT_ROW_KINDS,
        *ONCALL_FOLLOW_UP_KINDS,
        OutboxKind.CONTACT_CHECK,
    }
)


def compose_batch(
    ctx: DeliveryContext, session: Session, row_ids: Sequence[int], now: datetime
) -> dict[int, Composed]:
    """`compose` of every row of a claimed batch, in one transaction: the rows locked in one
    statement, and what they share read once (`reads.preload`)."""
    held = outbox.owned_many(session, row_ids, ctx.instance_id)
    preload(session, held.values(), tz=ctx.settings.timezone, resolve_at=now)
    return {row_id: compose(ctx, session, row_id, now, held=held.get(row_id)) for row_id in row_ids}


def compose(
    ctx: DeliveryContext,
    session: Session,
    row_id: int,
    now: datetime,
    *,
    held: OutboxMessage | None = None,
) -> Composed:
    """What the claimed row `row_id` means at `now` (renewing our lease on it); `held`: the
    row, already locked as ours in this transaction (`compose_batch`)."""
    if held is not None:
        row: OutboxMessage | None = held
        held.claimed_until = now + ctx.lease
    else:
        row = outbox.renew_claim(
            session, row_id, instance_id=ctx.instance_id, now=now, lease=ctx.lease
        )
    if row is None:
        return _not_held(ctx, session, row_id)
    referral = session.get(Referral, row.referral_id)
    if referral is None:
        return replace(fail(ctx, session, row, now, "no referral"), kind=row.kind)
    composer = COMPOSERS.get(row.kind)
    if composer is None:
        # A kind this version does not know (written by newer code): keep it, loudly.
        logger.error("outbox row %s has unknown kind %r; retrying later", row.id, row.kind)
        outbox.release_for_retry(
            session, row.id, instance_id=ctx.instance_id, now=now, error="unknown kind"
        )
        return Settled(Outcome.RETRYING, kind=row.kind, reason="unknown kind")
    if referral.status == ReferralStatus.CLOSED and row.kind in _CANCELLED_WHEN_CLOSED:
        composed: Composed = prompt.cancel_row(ctx, session, row, now, "referral closed")
    else:
        composed = composer(ctx, session, row, referral, now)
    if isinstance(composed, Settled):
        return replace(composed, kind=row.kind)
    if isinstance(composed, Delivery):
        composed = _for_its_person(ctx, session, row, composed)
        # Committed before the send: if this attempt's message reaches the channel but the
        # process dies, the next attempt finds it there and dates it to this attempt.
        composed = replace(
            composed,
            earlier_attempt_at=outbox.last_post_attempt_at(row),
            first_claimed_at=outbox.first_claimed_at(row),
        )
        wall = outbox.dispatch_state(row).get("first_claimed_wall")
        outbox.note(
            row,
            last_post_attempt_at=now.isoformat(),
            first_claimed_wall=wall or ctx.wall_clock.now().isoformat(),
            # What this attempt sends, should the row be cancelled under our claim and this
            # process die before saying whether it went out (reconcile.py looks for it).
            sending=sending_record(composed),
        )
        # From the first attempt on, by the wall clock too: a copy sent late by a dispatcher
        # that lost its claim is looked for among messages the channel stamped (send.py).
        composed = replace(composed, since=outbox.history_since(row))
    return composed


def _not_held(ctx: DeliveryContext, session: Session, row_id: int) -> Settled:
    """A row of our batch that is no longer ours: cancelled under our claim (its referral was
    closed, its target answered), or taken over by another dispatcher."""
    cancelled = outbox.cancelled_under_claim(session, row_id, ctx.instance_id)
    if cancelled is None:
        return Settled(Outcome.LOST, reason="claim lost")
    if not outbox.needs_check(cancelled):
        # Not sent by this claim, nor by an earlier one: nobody needs to look for it.
        outbox.settle_cancelled(cancelled)
    logger.info(
        "%s %s was cancelled in our batch (%s): not sent",
        cancelled.kind,
        row_id,
        cancelled.last_error,
    )
    return Settled(Outcome.CANCELLED, kind=cancelled.kind, reason=cancelled.last_error)


def _for_its_person(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, delivery: Delivery
) -> Delivery:
    """A message to a person names them (a channel that links answers binds the links to
    them), and lists the channels that send them a copy once it is delivered."""
    if delivery.person is None or row.kind == OutboxKind.COPY:
        return delivery
    contact = contact_of(session, delivery.person)
    copies = tuple(
        channel.name
        for channel in ctx.channels.copies_for(contact, delivery.channel)
        if channel.name not in outbox.unreachable_on(row)
    )
    message = replace(delivery.message, recipient=delivery.person)
    return replace(delivery, message=message, copies=copies)
