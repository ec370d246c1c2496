"""Composing a copy row: a message already delivered to a person, sent again by their other
channel (a `slack+email` contact gets the Slack message by email too).

The copy is the very message that was delivered, kept in the row when it was, so it says
exactly what the first said: no second composing can differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.channels.base import Message
from bot.delivery import outbox
from bot.delivery.compose.base import (
    Composed,
    DeliveryContext,
    NeedsAddress,
    contact_of,
    delivery_of,
    fail,
)
from bot.delivery.metadata import MessageTag
from bot.models import OutboxMessage, Referral


def message_record(message: Message) -> dict[str, Any]:
    """A message as a copy row keeps it (JSON)."""
    return {
        "text": message.text,
        "blocks": [dict(block) for block in message.blocks],
        "tag": {
            "event_type": message.tag.event_type,
            "payload": dict(message.tag.payload),
            "key": list(message.tag.key),
        },
        "recipient": message.recipient,
        "respond_by": message.respond_by.isoformat() if message.respond_by else None,
    }


def message_from_record(record: Mapping[str, Any]) -> Message:
    """The message a copy row keeps."""
    tag = record["tag"]
    respond_by = record.get("respond_by")
    return Message(
        text=str(record["text"]),
        blocks=list(record["blocks"]),
        tag=MessageTag(tag["event_type"], dict(tag["payload"]), key=tuple(tag["key"])),
        recipient=record.get("recipient"),
        respond_by=datetime.fromisoformat(respond_by) if respond_by else None,
    )


def compose_copy(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, referral: Referral, now: datetime
) -> Composed:
    """The kept message, to the person's address on the copy's channel."""
    record = outbox.load_detail(row).get("message")
    if not isinstance(record, dict) or not row.recipient_id or not row.channel:
        return fail(ctx, session, row, now, "nothing to copy")
    if not ctx.channels.has(row.channel):
        return fail(ctx, session, row, now, f"no {row.channel} channel")
    channel = ctx.channels.named(row.channel)
    contact = contact_of(session, row.recipient_id)
    address = row.address or channel.address_of(contact)
    if address is None:
        return NeedsAddress(row.recipient_id, channel.name, contact)
    row.address = address
    return delivery_of(row, channel, address, message_from_record(record))
