"""The delivery vocabulary: outbox kinds, row and target states, responses, dispatch outcomes.

Each is a `StrEnum`, so a member is stored, compared and written to JSON as its plain value
("prompt", "pending", …): rows written by an earlier version read back as members. This module
imports nothing of ours, so the models, the services and the Block Kit builders can share it.
"""

from __future__ import annotations

from enum import StrEnum

ACTOR = "dispatcher"  # the log's actor for everything delivery does


class OutboxKind(StrEnum):
    """What an outbox row delivers."""

    PROMPT = "prompt"  # the question to a target's recipient
    ON_CALL = "on_call"  # a new referral, to whoever holds an alert role
    LONG_GAP = "long_gap"  # a target nobody can be asked of for more than 48 hours
    UNROUTABLE = "unroutable"  # a target nobody can be asked of within 7 days
    DELIVERY_FAILURE = "delivery_failure"  # a prompt could not be delivered
    UNREACHABLE = "unreachable"  # a person could not be reached and was passed over
    CARD = "card"  # the referral's card in the EDT channel, posted then updated
    ESCALATION = "escalation"  # one escalation step; when due it becomes its messages
    STEP_MESSAGE = "step_message"  # one message of a performed escalation step
    COPY = "copy"  # a message delivered to a person, sent again by their other channel
    # On-call acknowledgement (docs/reference/slack.md, "On-call alerts"): an on-call DM nobody
    # acknowledged is sent again to its holder, then posted to the EDT channel.
    ONCALL_REPAGE = "oncall_repage"
    ONCALL_UNANSWERED = "oncall_unanswered"
    # Closing the loop (docs/closing-the-loop.md): what a partner offered reaches social care.
    INFO_NOTICE = "info_notice"  # "I hold information": to the referrer and the daytime owner
    CONTACT_CHECK = "contact_check"  # at the promised time +30 min: did the contact happen?
    CONTACT_DEADLINE = "contact_deadline"  # the end of that working day: no answer is "missed"
    CONTACT_MISSED = "contact_missed"  # to the professional and their team manager


# The rows of a promised contact: they follow a has_information answer, so an answer never
# cancels them as it cancels a target's reminders; a close does.
LOOP_ROW_KINDS = frozenset(
    {
        OutboxKind.INFO_NOTICE,
        OutboxKind.CONTACT_CHECK,
        OutboxKind.CONTACT_DEADLINE,
        OutboxKind.CONTACT_MISSED,
    }
)
# Messages of a promised contact, to a person or a room.
LOOP_MESSAGE_KINDS = frozenset(
    {OutboxKind.INFO_NOTICE, OutboxKind.CONTACT_CHECK, OutboxKind.CONTACT_MISSED}
)


class AlertKind(StrEnum):
    """What an alert is about (its Block Kit and its metadata name it)."""

    ON_CALL = "on_call"
    LONG_GAP = "long_gap"
    UNROUTABLE = "unroutable"
    DELIVERY_FAILURE = "delivery_failure"
    UNREACHABLE = "unreachable"
    SLACK_AUTH = "slack_auth"  # the bot's credentials were refused: posted at once, never a row
    ONCALL_UNANSWERED = "oncall_unanswered"  # nobody acknowledged an on-call alert


# The outbox kinds that are alerts (each delivers the alert of the same name).
ALERT_ROW_KINDS = frozenset(
    {
        OutboxKind.ON_CALL,
        OutboxKind.LONG_GAP,
        OutboxKind.UNROUTABLE,
        OutboxKind.DELIVERY_FAILURE,
        OutboxKind.UNREACHABLE,
    }
)
# On-call alerts: an alert row of one of these kinds addressed to a person (an on-call holder)
# carries the `handover_oncall_ack` button and is re-paged until acknowledged: on call, long gap,
# unroutable, unreachable (docs/reference/slack.md). Not a delivery failure, which is a report,
# not a page; a kind added to ALERT_ROW_KINDS is acknowledged and re-paged too.
ACKNOWLEDGED_ALERT_KINDS = ALERT_ROW_KINDS - {OutboxKind.DELIVERY_FAILURE}
# The follow-ups of an unacknowledged on-call alert.
ONCALL_FOLLOW_UP_KINDS = frozenset({OutboxKind.ONCALL_REPAGE, OutboxKind.ONCALL_UNANSWERED})


class RowState(StrEnum):
    """Where an outbox row is in its life."""

    PENDING = "pending"  # waiting for due_at (and next_attempt_at after a failure)
    CLAIMED = "claimed"  # a dispatcher holds it until its lease ends
    SENT = "sent"  # delivered (or, for an escalation step, performed)
    FAILED = "failed"  # given up after a permanent error (an alert was raised)
    CANCELLED = "cancelled"  # no longer owed


class ResponseKind(StrEnum):
    """What a prompt's buttons record: the Response's kind, the target's state and the event."""

    ACKNOWLEDGED = "acknowledged"
    HAS_INFORMATION = "has_information"
    NOT_KNOWN = "not_known"
    REDIRECTED = "redirected"


RESPONSE_KINDS: tuple[ResponseKind, ...] = tuple(ResponseKind)


class TargetState(StrEnum):
    """A target's live state: held until its prompt is sent, then prompted until answered."""

    HELD = "held"
    PROMPTED = "prompted"
    ESCALATED = "escalated"  # prompted, and the +120 step was performed
    FAILED = "failed"  # its prompt could not be delivered
    UNROUTABLE = "unroutable"  # nobody in its chain at work within 7 days
    CANCELLED = "cancelled"  # the referral was closed first
    # Answered: the state is the response's kind.
    ACKNOWLEDGED = ResponseKind.ACKNOWLEDGED.value
    HAS_INFORMATION = ResponseKind.HAS_INFORMATION.value
    NOT_KNOWN = ResponseKind.NOT_KNOWN.value
    REDIRECTED = ResponseKind.REDIRECTED.value


# Answered: one of the response kinds.
ANSWERED_TARGET_STATES = frozenset(TargetState(kind.value) for kind in ResponseKind)
# Sent, and nobody has answered yet.
UNANSWERED_TARGET_STATES = frozenset({TargetState.PROMPTED, TargetState.ESCALATED})


class Outcome(StrEnum):
    """What processing one claimed outbox row came to in a dispatch pass."""

    DELIVERED = "delivered"  # the message is in the channel (posted, updated or found there)
    PERFORMED = "performed"  # an escalation step became its messages
    RETRYING = "retrying"  # released to be tried again after a backoff
    FAILED = "failed"  # given up: a permanent error
    RESCHEDULED = "rescheduled"  # due later now (the rota changed)
    CANCELLED = "cancelled"  # no longer owed
    DEFERRED = "deferred"  # handed back unchanged, to be looked at again soon
    LOST = "lost"  # our claim ran out and another dispatcher has the row
