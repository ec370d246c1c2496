"""What delivery needs of any way of reaching people: the channel interface.

A `Channel` resolves a person to an address, looks among what it already sent for a row's
message, sends, updates and (where it can) deletes; its failures are four typed errors, so
delivery decides retries, history checks, alerts and holds without knowing which channel failed.
`Channels` holds the channels the bot has and says which one reaches each person and each room.

**Choosing a channel per person.** `Channels` is given a rule: for a person's contact details,
the channels to try in order (the first that reaches them carries the message; one that cannot
reach them hands it to the next) and the channels that also get a copy once it is delivered.
`bot.channels.build_channels` writes the rota's rule (`contact`: slack, email or slack+email;
docs/email.md). An outbox row records the name of the channel it goes by (`channel`), so its
retries and history checks stay on it. `bot.channels.email.EmailChannel` is the second channel;
the dispatcher, the composing of each row kind, escalation, the models and intake do not know it.

**Slack per workspace.** A partner agency's own Slack workspace is a channel of its own,
`slack:T…`, made when first named (`Channels(more=…)`): the rule picks it for the people of teams
whose `workspace` names it (docs/partner-workspaces.md), and rows record it like any channel.
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
    # Their team's Slack workspace (teams.csv `workspace`); None: the home workspace.
    workspace: str | None = None

    @classmethod
    def of(cls, person: Person, workspace: str | None = None) -> Contact:
        """The contact details of a rota row (and the workspace of the person's team)."""
        return cls(
            person.person_id,
            person.slack_user_id,
            person.email,
            person.contact or "slack",
            workspace,
        )


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
    # Whether `find` can tell that a message is not there (a Slack conversation's history
    # can); False for a channel that cannot be asked what it took (a mail relay), whose
    # `find` always answers None.
    searchable: bool

    def address_of(self, contact: Contact) -> str | None:
        """The stored address of a person on this channel, or None (no call is made)."""
        ...

    def look_up(self, contact: Contact) -> str:
        """Ask the channel for a person's address; RecipientUnreachable when it knows nobody."""
        ...

    def remember(self, person: Person, address: str) -> None:
        """Store an address `look_up` found on the person's rota row (in the caller's session)."""
        ...

    def find(
        self,
        address: str,
        tag: MessageTag,
        since: datetime | None,
        *,
        other_than: Sent | None = None,
    ) -> Sent | None:
        """The message tagged like `tag` already sent to `address` since `since`, if any
        (other than the message `other_than`)."""
        ...

    def send(self, address: str, message: Message) -> Sent:
        """Send a message to a person's or a room's address."""
        ...

    def update(self, sent: Sent, message: Message) -> Sent:
        """Replace a message sent earlier (e.g. the referral's card)."""
        ...

    def delete(self, sent: Sent) -> bool:
        """Take back a message sent earlier (a late duplicate); False when the channel cannot
        (an email, once sent, stays sent)."""
        ...

    def describe(self, sent: Sent) -> dict[str, Any]:
        """Where a sent message is, as the log's `detail` names it (`channel` first)."""
        ...


WORKSPACE_CHANNEL_PREFIX = "slack:"


def workspace_channel_name(workspace: str | None) -> str:
    """The channel name of a workspace's Slack: `slack` at home, `slack:T…` for a partner."""
    return f"{WORKSPACE_CHANNEL_PREFIX}{workspace}" if workspace else "slack"


def workspace_of_channel(name: str | None) -> str | None:
    """The partner workspace a channel name stands for (None for any other channel)."""
    if name and name.startswith(WORKSPACE_CHANNEL_PREFIX):
        return name[len(WORKSPACE_CHANNEL_PREFIX) :] or None
    return None


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
        more: Callable[[str], Channel | None] | None = None,
    ) -> None:
        self._by_name = {channel.name: channel for channel in channels}
        # Channels made when asked for by name (a partner workspace's Slack, whose token is
        # installed and removed while the bot runs); None for a name it does not know.
        self._more = more
        if not self._by_name:
            raise ValueError("at least one channel is needed")
        self._default = next(iter(self._by_name.values()))
        self._for_person = for_person
        self._copies = copies

    def named(self, name: str | None) -> Channel:
        """The channel of that name (a row's recorded channel); the first one for None."""
        if not name:
            return self._default
        found = self._by_name.get(name)
        if found is None and self._more is not None:
            found = self._more(name)
        if found is None:
            raise KeyError(name)
        return found

    def has(self, name: str) -> bool:
        """Whether the bot has a channel of that name (email only with HANDOVER_SMTP_URL)."""
        return name in self._by_name or (self._more is not None and self._more(name) is not None)

    def preferences(self, contact: Contact) -> list[Channel]:
        """The channels that may reach this person, in the order they are tried."""
        chosen = self._for_person(contact)
        names = [chosen] if chosen is None or isinstance(chosen, str) else list(chosen)
        found = [self.named(name) for name in names if name is None or self.has(name)]
        return list({channel.name: channel for channel in found}.values())

    def for_person(self, contact: Contact, *, excluding: Collection[str] = ()) -> Channel | None:
        """The channel that reaches this person, passing over those that could not (`excluding`
        names them); None when none is left."""
        return next((c for c in self.preferences(contact) if c.name not in excluding), None)

    def copies_for(self, contact: Contact, sent_by: str) -> list[Channel]:
        """The channels that also send this person a copy of what `sent_by` delivered."""
        return [
            self.named(name)
            for name in dict.fromkeys(self._copies(contact))
            if name != sent_by and self.has(name)
        ]

    def for_rooms(self) -> Channel:
        """The channel of the rooms the bot posts in (the EDT and escalation channels)."""
        return self._default
