"""What every row kind's composer shares: its context, what it may answer, and the one
resolution of a person to an address."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from bot.channels.base import (
    Channel,
    Channels,
    Contact,
    Message,
    RecipientUnreachable,
    Sent,
)
from bot.clock import Clock
from bot.delivery import outbox
from bot.delivery.kinds import Outcome
from bot.delivery.metadata import MessageTag
from bot.delivery.reads import store_of
from bot.delivery.results import RowResult
from bot.models import OutboxMessage, Referral
from bot.settings import Settings


@dataclass(frozen=True)
class DeliveryContext:
    """What composing and settling rows needs: settings, channels, and whose claims they are."""

    settings: Settings
    channels: Channels
    instance_id: str
    lease: timedelta
    wall_clock: Clock  # the real clock: channels stamp messages with it, whatever ours says


@dataclass(frozen=True)
class Delivery:
    """What step 2 sends for one row, decided in step 1's transaction."""

    row_id: int
    kind: str
    referral_id: str
    channel: str  # the channel's name
    address: str  # a person's or a room's address on it
    message: Message
    update: Sent | None = None  # replace this message instead of sending a new one
    check_history: bool = False  # an earlier attempt may have sent it: look first
    since: datetime | None = None  # no message of the row can be older
    due_at: datetime | None = None
    first_claimed_at: datetime | None = None
    earlier_attempt_at: datetime | None = None  # the latest earlier attempt that may have sent
    # The person the message is for, when it goes to them directly (not to a room): a channel
    # that cannot reach them hands it to their next one, and their copies follow it.
    person: str | None = None
    copies: tuple[str, ...] = ()  # channels that send the person a copy once it is delivered
    # What the log names once it is delivered (prompts and on-call alerts).
    recipient: str | None = None
    target: str | None = None
    via: str | None = None
    log_detail: Mapping[str, Any] = field(default_factory=dict)


def delivery_of(
    row: OutboxMessage, channel: Channel, address: str, message: Message, **kind_specific: Any
) -> Delivery:
    """A delivery of `message` for `row`: the fields every kind shares, plus its own."""
    fields: dict[str, Any] = {
        "check_history": outbox.needs_check(row),
        "since": outbox.history_since(row),
        "due_at": row.due_at,
        **kind_specific,
    }
    return Delivery(
        row_id=row.id,
        kind=row.kind,
        referral_id=row.referral_id,
        channel=channel.name,
        address=address,
        message=message,
        **fields,
    )


def sending_record(delivery: Delivery) -> dict[str, Any]:
    """What an attempt sends, kept on its row (JSON): enough to look for the message in its
    channel and log it as sent (`delivery_sent_by`), without composing the row again."""
    tag = delivery.message.tag
    return {
        "channel": delivery.channel,
        "address": delivery.address,
        "event_type": tag.event_type,
        "payload": dict(tag.payload),
        "key": list(tag.key),
        "person": delivery.person,
        "recipient": delivery.recipient,
        "target": delivery.target,
        "via": delivery.via,
        "log_detail": dict(delivery.log_detail),
    }


def delivery_sent_by(row: OutboxMessage) -> Delivery | None:
    """What the row's latest attempt sent (`sending_record`), to be looked for in its channel;
    None when no attempt got as far as composing a message."""
    record = outbox.dispatch_state(row).get("sending")
    if not isinstance(record, dict):
        return None
    tag = MessageTag(record["event_type"], record["payload"], key=tuple(record["key"]))
    return Delivery(
        row_id=row.id,
        kind=row.kind,
        referral_id=row.referral_id,
        channel=record["channel"],
        address=record["address"],
        message=Message("", (), tag, recipient=record.get("person")),
        check_history=True,
        since=outbox.history_since(row),
        due_at=row.due_at,
        first_claimed_at=outbox.first_claimed_at(row),
        # The attempt that may have sent it is the latest one.
        earlier_attempt_at=outbox.last_post_attempt_at(row),
        person=record.get("person"),
        recipient=record.get("recipient"),
        target=record.get("target"),
        via=record.get("via"),
        log_detail=record.get("log_detail") or {},
    )


@dataclass(frozen=True)
class NeedsAddress:
    """Step 1 needs a person's address that only a call to their channel can give."""

    person_id: str
    channel: str
    contact: Contact


@dataclass(frozen=True)
class Settled:
    """Step 1 settled the row without sending anything."""

    outcome: Outcome
    kind: str = ""  # the row's (set by `compose`)
    step: str | None = None
    late: bool = False
    reason: str | None = None
    next_due_at: datetime | None = None

    def result(self, row_id: int) -> RowResult:
        """As the pass reports it."""
        return RowResult(
            row_id,
            self.kind,
            self.outcome,
            late=self.late,
            step=self.step,
            reason=self.reason,
            next_due_at=self.next_due_at,
        )


Composed = Delivery | NeedsAddress | Settled
Composer = Callable[[DeliveryContext, Session, OutboxMessage, Referral, datetime], Composed]


def contact_of(session: Session, person_id: str) -> Contact:
    """A person's contact details (only their id when they left the rota)."""
    # Through the transaction's one store: a batch reads each person and team once.
    store = store_of(session)
    person = store.person(person_id)
    if person is None:
        return Contact(person_id)
    team = store.team(person.team_id)
    return Contact.of(person, workspace=team.workspace if team is not None else None)


def reach_person(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, person_id: str
) -> tuple[Channel, str] | NeedsAddress:
    """The one resolution of a person, for every kind of message: the channel that reaches
    them (passing over those that could not reach them for this row) and their stored address
    on it, else NeedsAddress (the channel is asked, the answer stored, and the row composed
    again). RecipientUnreachable when no channel is left."""
    contact = contact_of(session, person_id)
    tried = outbox.unreachable_on(row)
    channel = ctx.channels.for_person(contact, excluding=tried)
    if channel is None:
        reasons = ", ".join(f"{name}: {error}" for name, error in tried.items()) or "none"
        raise RecipientUnreachable(
            f"no channel reaches {person_id} ({reasons})",
            method="resolve",
            error=next(reversed(tried.values()), "no_channel"),
            person_id=person_id,
        )
    address = channel.address_of(contact)
    if address is None:
        return NeedsAddress(person_id, channel.name, contact)
    return channel, address


def cancel(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, reason: str, step: str | None = None
) -> Settled:
    """Settle a row no longer owed."""
    outbox.mark_cancelled(session, row.id, instance_id=ctx.instance_id, reason=reason)
    return Settled(Outcome.CANCELLED, step=step, reason=reason)


def fail(
    ctx: DeliveryContext, session: Session, row: OutboxMessage, now: datetime, error: str
) -> Settled:
    """Settle a row that can never be delivered (loudly: the caller says why to a person)."""
    outbox.mark_failed(session, row.id, instance_id=ctx.instance_id, now=now, error=error)
    return Settled(Outcome.FAILED, reason=error)
