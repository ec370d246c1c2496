"""Step 2 of delivering a row, with no transaction open: find it already sent, else send it.

A row whose earlier attempt may have reached the channel (its dispatcher died after sending, or
the send failed ambiguously) is looked for first, by its message tag, since the row was first
claimed; only when it is not there is it sent (or, for a message sent earlier, updated).
"""

from __future__ import annotations

import logging

from bot.channels.base import Channel, Sent
from bot.delivery.compose import Delivery

logger = logging.getLogger(__name__)


def find_or_send(channel: Channel, delivery: Delivery) -> tuple[Sent, bool]:
    """Where the row's message now is, and whether it was found rather than sent now."""
    if delivery.check_history:
        found = channel.find(delivery.address, delivery.message.tag, delivery.since)
        if found is not None:
            logger.info("%s %s was already sent (%s)", delivery.kind, delivery.row_id, found.ts)
            return found, True
    if delivery.update is not None:
        return channel.update(delivery.update, delivery.message), False
    return channel.send(delivery.address, delivery.message), False
