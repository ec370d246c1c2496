"""Message metadata: what each message the bot sends is, and which outbox row sent it.

Exactly-once delivery rests on this: a message that may already be in a channel (its dispatcher
died after posting, or the post failed ambiguously) is looked for by its tag before it is ever
sent again. Every message carries an event type saying what it is, so "the handover_prompt
message in X's DM" is always a prompt, and a payload naming the referral and the outbox row
that delivers it. docs/reference/slack.md: metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Fixed by docs/reference/slack.md: a prompt DM's payload is {"referral_id", "prompt_id"}, where
# prompt_id is the id of the prompt's outbox row.
PROMPT_EVENT_TYPE = "handover_prompt"
CARD_EVENT_TYPE = "handover_card"  # the referral's card in the EDT channel
ALERT_EVENT_TYPE = "handover_alert"  # on call, long gap, unroutable, delivery failure, Slack auth
ESCALATION_EVENT_TYPE = "handover_escalation"  # reminder, escalation DMs, channel post, breach
LOOP_EVENT_TYPE = "handover_loop"  # information notice, contact check, missed contact


@dataclass(frozen=True)
class MessageTag:
    """A message's metadata, and which of its payload fields name the outbox row that sent it."""

    event_type: str
    payload: Mapping[str, Any]
    key: tuple[str, ...]

    @property
    def metadata(self) -> dict[str, Any]:
        """As Slack's `metadata` argument: {"event_type", "event_payload"}."""
        return {"event_type": self.event_type, "event_payload": dict(self.payload)}

    @property
    def identity(self) -> dict[str, Any]:
        """The payload fields that identify this message among the bot's others."""
        return {name: self.payload[name] for name in self.key}


def prompt_tag(referral_id: str, prompt_id: int) -> MessageTag:
    """A prompt DM's tag, found again by its prompt_id."""
    payload = {"referral_id": referral_id, "prompt_id": prompt_id}
    return MessageTag(PROMPT_EVENT_TYPE, payload, key=("prompt_id",))


def card_tag(referral_id: str, row_id: int) -> MessageTag:
    """The card's tag: how a retry finds the card its outbox row posted."""
    payload = {"referral_id": referral_id, "row_id": row_id}
    return MessageTag(CARD_EVENT_TYPE, payload, key=("row_id",))


def alert_tag(kind: str, referral_id: str, row_id: int | None = None) -> MessageTag:
    """An alert's tag: its kind, and the outbox row that delivers it (none for one posted at
    once, which is never looked for)."""
    payload: dict[str, Any] = {"referral_id": referral_id, "kind": kind}
    if row_id is None:
        return MessageTag(ALERT_EVENT_TYPE, payload, key=())
    payload["row_id"] = row_id
    return MessageTag(ALERT_EVENT_TYPE, payload, key=("row_id",))


def escalation_tag(referral_id: str, prompt_id: int, row_id: int, step: str) -> MessageTag:
    """A message of an escalation step: the prompt it chases, the step, and its own outbox row."""
    payload = {"referral_id": referral_id, "prompt_id": prompt_id, "step": step, "row_id": row_id}
    return MessageTag(ESCALATION_EVENT_TYPE, payload, key=("row_id",))


def loop_tag(kind: str, referral_id: str, followup_id: int, row_id: int) -> MessageTag:
    """A message of a promised contact (docs/closing-the-loop.md): its kind, the promise, and
    its own outbox row."""
    payload = {
        "referral_id": referral_id,
        "kind": kind,
        "followup_id": followup_id,
        "row_id": row_id,
    }
    return MessageTag(LOOP_EVENT_TYPE, payload, key=("row_id",))
