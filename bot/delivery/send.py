"""Step 2 of delivering a row, with no transaction open: find it already sent, else send it.

A row whose earlier attempt may have reached the channel (its dispatcher died after sending, or
the send failed ambiguously) is looked for first, by its message tag, since the row was first
claimed; only when it is not there is it sent (or, for a message sent earlier, updated).
"""

from __future__ import annotations

import logging

from bot.channels.base import Channel, Sent
from bot.channels.slack import SlackChannel
from bot.delivery.compose import Delivery
from bot.delivery.pacing import Pacer

logger = logging.getLogger(__name__)


def find_or_send(
    channel: Channel, delivery: Delivery, pacer: Pacer | None = None
) -> tuple[Sent, bool]:
    """Where the row's message now is, and whether it was found rather than sent now.

    With a `pacer`, each Slack call first waits for its rate tier's token (pacing.py).
    """
    if delivery.check_history:
        _pace(pacer, channel, "conversations.history")
        found = channel.find(delivery.address, delivery.message.tag, delivery.since)
        if found is not None:
            logger.info("%s %s was already sent (%s)", delivery.kind, delivery.row_id, found.ts)
            return found, True
    if delivery.update is not None:
        _pace(pacer, channel, "chat.update")
        return channel.update(delivery.update, delivery.message), False
    _pace(pacer, channel, "chat.postMessage")
    return channel.send(delivery.address, delivery.message), False


def _pace(pacer: Pacer | None, channel: Channel, method: str) -> None:
    if pacer is not None and isinstance(channel, SlackChannel):
        pacer.wait(channel.client.token, method)
