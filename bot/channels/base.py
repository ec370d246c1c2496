"""What delivery needs of any way of reaching people: the channel interface.

A `Channel` resolves a person to an address, looks among what it already sent for a row's
message, sends and updates; its failures are four typed errors, so delivery decides retries,
history checks, alerts and holds without knowing which channel failed. `Channels` holds the
channels the bot has and says which one reaches each person and each room.

**A second channel.** Email implements `Channel`: `address_of` reads `contact.email`, `look_up`
has nobody more to ask (None), `remember` stores nothing; `send` sends one message whose
Message-ID is made from `message.tag.identity` (the outbox row), `find` looks for that
Message-ID among the messages it sent (or raises a `TransientError` while it cannot tell, so
nothing is sent twice), and `update` sends the changed message as a follow-up. Its failures map
onto the same errors: a connection dropped after the message was handed over is an ambiguous
`TransientError`, a refused mailbox `RecipientUnreachable`, refused SMTP credentials
`CredentialsRefused`. `Channels(..., for_person=...)` then picks it for the people whose rota
row asks for email; an outbox row records the name of the channel it goes by (`channel`), so
its retries and history checks stay on it. The dispatcher, the composing of each row kind,
escalation, the models and intake stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.delivery.metadata import MessageTag
from rota.models import Person


@dataclass(frozen=True)
class Contact:
    """What the rota says about reaching one person."""

    person_id: str
    slack_user: str | None = None  # given in people.csv, or found by email and stored
    email: str | None = None

    @classmethod
    def of(cls, person: Person) -> Contact:
        """The contact details of a rota row."""
        return cls(person.person_id, person.slack_user_id, person.email)


@dataclass(frozen=True)
class Message:
    """One message: what a person reads (text and blocks) and its tag (metadata)."""

    text: str
    blocks: Sequence[Mapping[str, Any]]
    tag: MessageTag


@dataclass(frozen=True)
class Sent:
    """Where a sent message lives: its conversation and its id there (Slack's channel and ts)."""

    conversation: str
    ts: str


class ChannelError(Exception):
    """A channel call failed; `error` is the channel's own error code (or a short description)."""

    def __init__(self, message: str, *, method: str, error: str) -> None:
        super().__init__(message)
        self.method = method
        self.error = error


class TransientError(ChannelError):
    """The channel could not be reached or was overloaded: try again later.

    `ambiguous` is True when the request may have taken effect anyway (a timeout, a 5xx after
    sending); `retry_after` is the channel's own wait in seconds when it gave one;
    `unreachable` is True when no connection could be made at all.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        error: str,
        ambiguous: bool,
        retry_after: float | None = None,
        unreachable: bool = False,
    ) -> None:
        super().__init__(message, method=method, error=error)
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        self.unreachable = unreachable


class RecipientUnreachable(ChannelError):
    """This person or room cannot be reached on this channel: retrying will not help."""


class RequestRefused(ChannelError):
    """The channel refused the request itself (e.g. invalid blocks): a bug, not worth retrying."""


class CredentialsRefused(ChannelError):
    """The bot's credentials are refused: nothing can be sent on this channel until fixed."""


class Channel(Protocol):
    """A way of reaching people (`bot.channels.slack.SlackChannel` is one)."""

    name: str

    def address_of(self, contact: Contact) -> str | None:
        """The stored address of a person on this channel, or None (no call is made)."""
        ...

    def look_up(self, contact: Contact) -> str:
        """Ask the channel for a person's address; RecipientUnreachable when it knows nobody."""
        ...

    def remember(self, person: Person, address: str) -> None:
        """Store an address `look_up` found on the person's rota row (in the caller's session)."""
        ...

    def find(self, address: str, tag: MessageTag, since: datetime | None) -> Sent | None:
        """The message tagged like `tag` already sent to `address` since `since`, if any."""
        ...

    def send(self, address: str, message: Message) -> Sent:
        """Send a message to a person's or a room's address."""
        ...

    def update(self, sent: Sent, message: Message) -> Sent:
        """Replace a message sent earlier (e.g. the referral's card)."""
        ...


def _no_preference(contact: Contact) -> str | None:
    """Everyone is reached by the first channel."""
    return None


class Channels:
    """The channels the bot has, and which one reaches each person and the rooms."""

    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        for_person: Callable[[Contact], str | None] = _no_preference,
    ) -> None:
        self._by_name = {channel.name: channel for channel in channels}
        if not self._by_name:
            raise ValueError("at least one channel is needed")
        self._default = next(iter(self._by_name.values()))
        self._for_person = for_person

    def named(self, name: str | None) -> Channel:
        """The channel of that name (a row's recorded channel); the first one for None."""
        return self._by_name[name] if name else self._default

    def for_person(self, contact: Contact) -> Channel:
        """The channel that reaches this person."""
        return self.named(self._for_person(contact))

    def for_rooms(self) -> Channel:
        """The channel of the rooms the bot posts in (the EDT and escalation channels)."""
        return self._default
