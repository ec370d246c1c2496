"""SQLAlchemy models of referrals, their targets, the prompt outbox and the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from rota.models import Base, UTCDateTime

# Referral vocabulary (CONTRACT §5): what a referral is about and how soon it matters
CATEGORIES = (
    "domestic_abuse",
    "physical_abuse",
    "sexual_abuse",
    "neglect",
    "emotional_abuse",
    "exploitation",
    "missing",
    "other",
)
URGENCIES = ("urgent", "standard")

# Referral states
OPEN = "open"
CLOSED = "closed"

# Outbox (prompt) states
PENDING = "pending"  # waiting for due_at
CLAIMED = "claimed"  # a dispatcher took it; confirmed by `sent` or released
SENT = "sent"
FAILED = "failed"  # gave up after a permanent error (an alert was raised)
CANCELLED = "cancelled"

# Outbox kinds (Prompt.kind): what a row delivers
KIND_PROMPT = "prompt"  # the question to a target's recipient
KIND_ON_CALL = "on_call"  # a new referral, to whoever holds an alert role
KIND_LONG_GAP = "long_gap"
KIND_UNROUTABLE = "unroutable"
KIND_CARD = "card"  # the referral's card in the EDT channel, posted then updated
KIND_ESCALATION = "escalation"  # one escalation step (reminder, escalation, breach, ...)
KIND_DELIVERY_FAILURE = "delivery_failure"  # the dispatcher could not deliver a prompt
# Alerts the outbox delivers; `slack_auth` is posted directly, never as a row.
ALERT_KINDS = (KIND_ON_CALL, KIND_LONG_GAP, KIND_UNROUTABLE, KIND_DELIVERY_FAILURE)
KIND_SLACK_AUTH = "slack_auth"

# Response kinds: what each prompt button records, as Response.kind, the Target's state and
# the audit event alike
RESPONSE_ACKNOWLEDGED = "acknowledged"
RESPONSE_HAS_INFORMATION = "has_information"
RESPONSE_NOT_KNOWN = "not_known"
RESPONSE_REDIRECTED = "redirected"
RESPONSE_KINDS = (
    RESPONSE_ACKNOWLEDGED,
    RESPONSE_HAS_INFORMATION,
    RESPONSE_NOT_KNOWN,
    RESPONSE_REDIRECTED,
)

# Target states: held until the prompt is sent, then prompted until a response (one of
# RESPONSE_KINDS) is recorded; failed, unroutable and cancelled are the other ends
TARGET_HELD = "held"
TARGET_PROMPTED = "prompted"
TARGET_ESCALATED = "escalated"
TARGET_FAILED = "failed"  # its prompt could not be delivered
TARGET_UNROUTABLE = "unroutable"  # nobody in its chain at work within 7 days
TARGET_CANCELLED = "cancelled"  # the referral was closed first
# Sent, and nobody has answered yet
TARGET_UNANSWERED_STATES = (TARGET_PROMPTED, TARGET_ESCALATED)


class Referral(Base):
    __tablename__ = "referrals"

    referral_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    external_ref: Mapped[str] = mapped_column(String(64), unique=True)
    category: Mapped[str] = mapped_column(String(32))
    urgency: Mapped[str] = mapped_column(String(16))
    referred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())  # t0
    referrer_id: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")  # never sent to Slack
    source: Mapped[str] = mapped_column(String(16))  # api | slack
    request_hash: Mapped[str] = mapped_column(String(64))  # idempotency comparison
    rota_version: Mapped[int] = mapped_column(Integer)
    plan_json: Mapped[str] = mapped_column(Text)  # the plan and alerts as answered at intake
    status: Mapped[str] = mapped_column(String(16), default=OPEN, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_by: Mapped[str | None] = mapped_column(String(64))
    close_reason: Mapped[str | None] = mapped_column(String(500))
    card_channel: Mapped[str | None] = mapped_column(String(32))
    card_ts: Mapped[str | None] = mapped_column(String(32))
    # When `handover purge` erased its personal data (bot/services/retention.py)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Target(Base):
    """One entry of a referral's notify list, with its plan and live state."""

    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(140))  # person:ID | team:ID | role:NAME
    planned_via: Mapped[str] = mapped_column(String(16))
    planned_recipient: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # T0; None if unroutable
    state: Mapped[str] = mapped_column(String(16), default=TARGET_HELD)
    redirected_from_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"))

    __table_args__ = (UniqueConstraint("referral_id", "position"),)


class Prompt(Base):
    """The outbox: every Slack message the bot owes, with due time, state and attempts."""

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    recipient_id: Mapped[str | None] = mapped_column(String(64))  # person_id, resolved late
    channel_id: Mapped[str | None] = mapped_column(String(32))  # Slack channel when known
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_channel: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[str | None] = mapped_column(Text)  # JSON, kind-specific (no summary)

    __table_args__ = (Index("ix_prompts_state_due", "state", "due_at"),)


class Response(Base):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"))
    kind: Mapped[str] = mapped_column(String(24))
    responder_id: Mapped[str] = mapped_column(String(64))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)  # JSON; never free-text narrative


class AuditEvent(Base):
    """The append-only log (CONTRACT §7); triggers refuse UPDATE and DELETE.

    A hash chain makes tampering evident (docs/security.md): each row names the row before it
    (`prev_id`, `prev_hash`) and carries the SHA-256 of its own contents and that hash
    (`row_hash`); bot/services/audit.py is its only writer and `handover log verify` checks it.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    referral_id: Mapped[str | None] = mapped_column(String(32), index=True)
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(64))
    recipient: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(140))
    detail: Mapped[str | None] = mapped_column(Text)
    rota_version: Mapped[int | None] = mapped_column(Integer)
    prev_id: Mapped[int | None] = mapped_column(Integer)  # None for the first row
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The last row of the audit log's hash chain: one row, locked by each writer, so that the
    chain has one order and a deleted tail is evident."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class SlackEvent(Base):
    """Event ids already handled, so Slack's retried deliveries are processed once."""

    __tablename__ = "slack_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SlackRequest(Base):
    """Signatures of Slack requests already answered: a replay within the signature window is
    refused (docs/security.md). Kept until its timestamp is too old to pass the signature check."""

    __tablename__ = "slack_requests"

    signature: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex HMAC-SHA256
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


AUDIT_EVENTS = (
    "referral_received",
    "referral_duplicate",
    "referral_closed",
    "on_call_alerted",
    "long_gap_alert",
    "prompt_scheduled",
    "prompt_sent",
    "prompt_sent_late",
    "prompt_failed",
    "reminder_sent",
    "escalated",
    "escalated_channel",
    "breach",
    "unroutable",
    "acknowledged",
    "has_information",
    "not_known",
    "redirected",
    "response_refused",
    "prompt_cancelled",
    "referral_purged",  # retention erased its personal data (bot/services/retention.py)
)
