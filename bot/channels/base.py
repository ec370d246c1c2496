"""What delivery needs of any way of reaching people: the channel interface.

A `Channel` resolves a person to an address, looks among what it already sent for a row's
message, sends and updates; its failures are four typed errors, so delivery decides retries,
history checks, alerts and holds without knowing which channel failed. `Channels` holds the
channels the bot has and says which one reaches each person and each room.

**Choosing a channel per person.** `Channels` is given a rule: for a person's contact details,
the channels to try in order (the first that reaches them carries the message; one that cannot
reach them hands it to the next) and the channels that also get a copy once it is delivered.
`bot.channels.build_channels` writes the rota's rule (`contact`: slack, email or slack+email;
docs/email.md). An outbox row records the name of the channel it goes by (`channel`), so its
retries and history checks stay on it. `bot.channels.email.EmailChannel` is the second channel;
the dispatcher, the composing of each row kind, escalation, the models and intake do not know it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
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
    contact: str = "slack"  # people.csv's `contact`: slack | email | slack+email

    @classmethod
    def of(cls, person: Person) -> Contact:
        """The contact details of a rota row."""
        return cls(person.person_id, person.slack_user_id, person.email, person.contact or "slack")


@dataclass(frozen=True)
class Message:
    """One message: what a person reads (text and blocks) and its tag (metadata).

    A message for one person names them (`recipient`, a person_id) and, when it asks for an
    answer, the instant it is due by (`respond_by`, the breach): a channel whose answers come
    back by link (email) binds the links to that person and lets them expire after it.
    """

    text: str
    blocks: Sequence[Mapping[str, Any]]
    tag: MessageTag
    recipient: str | None = None
    respond_by: datetime | None = None


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
    """This person or room cannot be reached on this channel: retrying will not help.

    `person_id` names them when the error is raised before a row recorded them (resolution).
    """

    def __init__(
        self, message: str, *, method: str, error: str, person_id: str | None = None
    ) -> None:
        super().__init__(message, method=method, error=error)
        self.person_id = person_id


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

    def describe(self, sent: Sent) -> dict[str, Any]:
        """Where a sent message is, as the log's `detail` names it (`channel` first)."""
        ...


# A person's rule: the names of the channels to try in order (or one name; None: the first
# channel the bot has).
PersonRule = Callable[[Contact], str | Sequence[str] | None]


def _no_preference(contact: Contact) -> str | None:
    """Everyone is reached by the first channel."""
    return None


def _no_copies(contact: Contact) -> Sequence[str]:
    """Nobody gets a copy by another channel."""
    return ()


class Channels:
    """The channels the bot has, and which reach each person (in order) and the rooms."""

    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        for_person: PersonRule = _no_preference,
        copies: Callable[[Contact], Sequence[str]] = _no_copies,
    ) -> None:
        self._by_name = {channel.name: channel for channel in channels}
        if not self._by_name:
            raise ValueError("at least one channel is needed")
        self._default = next(iter(self._by_name.values()))
        self._for_person = for_person
        self._copies = copies

    def named(self, name: str | None) -> Channel:
        """The channel of that name (a row's recorded channel); the first one for None."""
        return self._by_name[name] if name else self._default

    def has(self, name: str) -> bool:
        """Whether the bot has a channel of that name (email only with HANDOVER_SMTP_URL)."""
        return name in self._by_name

    def preferences(self, contact: Contact) -> list[Channel]:
        """The channels that may reach this person, in the order they are tried."""
        chosen = self._for_person(contact)
        names = [chosen] if chosen is None or isinstance(chosen, str) else list(chosen)
        found = [self.named(name) for name in names if name is None or name in self._by_name]
        return list({channel.name: channel for channel in found}.values())

    def for_person(self, contact: Contact, *, excluding: Collection[str] = ()) -> Channel | None:
        """The channel that reaches this person, passing over those that could not (`excluding`
        names them); None when none is left."""
        return next((c for c in self.preferences(contact) if c.name not in excluding), None)

    def copies_for(self, contact: Contact, sent_by: str) -> list[Channel]:
        """The channels that also send this person a copy of what `sent_by` delivered."""
        return [
            self._by_name[name]
            for name in dict.fromkeys(self._copies(contact))
            if name in self._by_name and name != sent_by
        ]

    def for_rooms(self) -> Channel:
        """The channel of the rooms the bot posts in (the EDT and escalation channels)."""
        return self._default
