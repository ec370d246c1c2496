"""Step 2 of delivering a row, with no transaction open: find it already sent, else send it.

A row whose earlier attempt may have reached the channel (its dispatcher died after sending, or
the send failed ambiguously) is looked for first, by its message tag, since the row was first
claimed; only when it is not there is it sent (or, for a message sent earlier, updated).

Immediately before the send, after the history check and the wait for a rate token, the claim
is checked and renewed in one statement (`outbox.hold_claim`): a dispatcher that froze or
waited past its lease sends nothing (`ClaimLost`). Nothing in a send sleeps: a 429 goes back to
the outbox (pacing.py). What a frozen process may still send between that check and the post
is removed afterwards (`remove_late_copy`, called by confirm.py). docs/timing.md, "Claims
that cannot be overrun".
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection

from bot.channels.base import Channel, Sent
from bot.channels.slack import SlackChannel
from bot.delivery.compose import Delivery
from bot.delivery.pacing import GuardRefused, Pacer

logger = logging.getLogger(__name__)


class ClaimLost(Exception):
    """Our claim on the row no longer holds before its message is sent (it ran out and another
    dispatcher took the row, or the row was cancelled in our batch): nothing was sent."""


def find_or_send(
    channel: Channel,
    delivery: Delivery,
    pacer: Pacer | None = None,
    *,
    hold_claim: Callable[[Connection | None], bool],
) -> tuple[Sent, bool]:
    """Where the row's message now is, and whether it was found rather than sent now.

    With a `pacer`, each Slack call first waits for its rate tier's token (pacing.py).
    `hold_claim` renews our claim and says whether it is still ours; it is asked last before
    the send, and ClaimLost is raised (nothing sent) when it is not. A paced send asks it in
    the transaction that takes the send's token (given that connection; else None, and it
    opens its own).
    """
    if delivery.check_history:
        found = look_for(channel, delivery, pacer)
        if found is not None:
            logger.info("%s %s was already sent (%s)", delivery.kind, delivery.row_id, found.ts)
            return found, True
    method = "chat.update" if delivery.update is not None else "chat.postMessage"
    if not _pace_holding(pacer, channel, method, hold_claim):
        # The caller says why (lost to another dispatcher, or cancelled in our batch).
        raise ClaimLost(f"claim on row {delivery.row_id} lost before sending")
    if delivery.update is not None:
        return channel.update(delivery.update, delivery.message), False
    return channel.send(delivery.address, delivery.message), False


def look_for(channel: Channel, delivery: Delivery, pacer: Pacer | None = None) -> Sent | None:
    """The row's message in its channel, by its tag, sent since the row was first claimed
    (None: not there, or a channel that cannot be asked, email)."""
    _pace(pacer, channel, "conversations.history")
    return channel.find(delivery.address, delivery.message.tag, delivery.since)


def remove_late_copy(
    channel: Channel, delivery: Delivery, sent: Sent, pacer: Pacer | None = None
) -> tuple[Sent, bool] | None:
    """We posted `sent`, then found our claim lost: if the channel holds another copy of the
    same row (another dispatcher took the row over and sent it), ours is deleted when the
    channel can; returns that other copy and whether ours is gone. None: no other copy.

    Only a new post can be a duplicate (an update rewrites the one message, and a message
    found in history was not sent by us). Without another copy, ours is the row's: the
    dispatcher that holds the row now finds it by its tag and does not post again.
    """
    if delivery.update is not None:
        return None
    _pace(pacer, channel, "conversations.history")
    other = channel.find(delivery.address, delivery.message.tag, delivery.since, other_than=sent)
    if other is None:
        return None
    _pace(pacer, channel, "chat.delete")
    deleted = channel.delete(sent)
    if deleted:
        logger.warning(
            "%s %s was also sent by another dispatcher (%s): deleted our late copy %s",
            delivery.kind,
            delivery.row_id,
            other.ts,
            sent.ts,
        )
    else:
        # An email cannot be taken back; the check before sending is its only guard.
        logger.error(
            "%s %s was also sent by another dispatcher (%s); %s cannot take back our late copy %s",
            delivery.kind,
            delivery.row_id,
            other.ts,
            channel.name,
            sent.ts,
        )
    return other, deleted


def _pace_holding(
    pacer: Pacer | None,
    channel: Channel,
    method: str,
    hold_claim: Callable[[Connection | None], bool],
) -> bool:
    """Wait for `method`'s token and check the claim, in one transaction where the send is
    paced; whether the claim is still ours."""
    if pacer is not None and isinstance(channel, SlackChannel) and pacer.paces(method):
        try:
            pacer.wait(channel.client.token, method, guard=hold_claim)
        except GuardRefused:
            return False
        return True
    return hold_claim(None)


def _pace(pacer: Pacer | None, channel: Channel, method: str) -> None:
    if pacer is not None and isinstance(channel, SlackChannel):
        pacer.wait(channel.client.token, method)
