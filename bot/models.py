"""SQLAlchemy models of referrals, their targets, the outbox and the audit log."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.delivery.kinds import RowState, TargetState
from rota.models import Base, UTCDateTime

# Referral vocabulary (docs/reference/http.md): what a referral is about and how soon it matters
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


class ReferralStatus(StrEnum):
    """Whether a referral still owes anything."""

    OPEN = "open"
    CLOSED = "closed"


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
    status: Mapped[str] = mapped_column(String(16), default=ReferralStatus.OPEN, index=True)
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
    spec: Mapped[str] = mapped_column(String(140))  # person:ID | team:ID | role:NAME
    planned_via: Mapped[str] = mapped_column(String(16))
    planned_recipient: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # T0; None if unroutable
    state: Mapped[str] = mapped_column(String(16), default=TargetState.HELD)
    redirected_from_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"))

    __table_args__ = (UniqueConstraint("referral_id", "position"),)


class OutboxMessage(Base):
    """A row of the outbox: one message the bot owes (a prompt, an alert, a card update, an
    escalation step or one of its messages), with its due time, state and attempts.

    A prompt's `prompt_id` (in its metadata, on its buttons, in Response) is its row's id.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))  # an OutboxKind
    recipient_id: Mapped[str | None] = mapped_column(String(64))  # person_id, resolved late
    channel: Mapped[str | None] = mapped_column(String(16))  # how it goes (slack), once chosen
    address: Mapped[str | None] = mapped_column(String(254))  # where on that channel, once known
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), default=RowState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Where the sent message lives: its conversation and its id there (Slack's channel and ts).
    message_channel: Mapped[str | None] = mapped_column(String(254))
    message_ts: Mapped[str | None] = mapped_column(String(255))
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    # sent_at - due_at in milliseconds, set when sent: /metrics' lateness histogram counts it.
    lateness_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[str | None] = mapped_column(Text)  # JSON, kind-specific (no summary)

    __table_args__ = (
        Index("ix_outbox_state_due", "state", "due_at"),
        # GET /metrics counts settled rows and their lateness from this index alone.
        Index("ix_outbox_metrics", "state", "kind", "channel", "late", "lateness_ms"),
        # Leases: an abandoned claim, and a row cancelled under a claim not yet settled
        # (`outbox.claim_unsettled`), found by their state and the end of their lease.
        Index("ix_outbox_state_lease", "state", "claimed_until"),
    )


class OnCallAcknowledgement(Base):
    """Who acknowledged an on-call alert, and when (docs/reference/slack.md, "On-call alerts").

    An alert is every DM of one alert row's facts to the holders of the alert (`alert_key`, the
    same for each holder's row); one row here per alert, so one holder's click stops the
    re-paging of all of them, and two clicks at once leave one acknowledgement.
    """

    __tablename__ = "oncall_acknowledgements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    alert_key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))  # the alert's OutboxKind
    alert_row_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"))  # the alert clicked
    person_id: Mapped[str] = mapped_column(String(64))
    slack_user_id: Mapped[str | None] = mapped_column(String(32))
    acknowledged_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("referral_id", "alert_key"),)


class Response(Base):
    __tablename__ = "responses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    kind: Mapped[str] = mapped_column(String(24))
    responder_id: Mapped[str] = mapped_column(String(64))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)  # JSON; never free-text narrative


class ContactState(StrEnum):
    """Whether a contact promised with "I hold information" happened (docs/closing-the-loop.md)."""

    AWAITING = "awaiting"
    CONFIRMED = "confirmed"
    MISSED = "missed"


class ContactFollowup(Base):
    """A contact a professional promised with "I hold information": who, how, by when, and
    whether the social worker says it happened. One a has_information response."""

    __tablename__ = "contact_followups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.referral_id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"))
    response_id: Mapped[int] = mapped_column(ForeignKey("responses.id"), unique=True)
    professional_id: Mapped[str] = mapped_column(String(64))  # who offered the information
    method: Mapped[str] = mapped_column(String(16))  # phone | case_system
    contact_by: Mapped[datetime] = mapped_column(UTCDateTime())
    referrer_id: Mapped[str] = mapped_column(String(64))
    owner_team: Mapped[str | None] = mapped_column(String(64))  # HANDOVER_OWNER_TEAM then
    state: Mapped[str] = mapped_column(String(16), default=ContactState.AWAITING)
    answered_by: Mapped[str | None] = mapped_column(String(64))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """The append-only log (docs/reference/audit-events.md); triggers refuse UPDATE and DELETE.

    A hash chain makes tampering evident (docs/security.md): each row names the row before it
    (`prev_id`, `prev_hash`) and carries the SHA-256 of its own contents and that hash
    (`row_hash`); bot/services/audit.py is its only writer and `handover log verify` checks it.
    """

    __tablename__ = "audit_log"
    # The referrals received in a report's window are read through (event, at).
    __table_args__ = (Index("ix_audit_log_event_at", "event", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    referral_id: Mapped[str | None] = mapped_column(String(32), index=True)
    event: Mapped[str] = mapped_column(String(32), index=True)  # /metrics counts by it
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


class SlackJobState(StrEnum):
    """Where a job of work after a Slack ack stands (bot/slackjobs/queue.py)."""

    WAITING = "waiting"  # ready at `ready_at`
    RUNNING = "running"  # claimed by `claimed_by` until `claimed_until`
    DONE = "done"
    DROPPED = "dropped"  # failed `attempts` times: given up (the slack_job_dropped event)


class SlackJob(Base):
    """The work a click or a slash command starts after its ack, kept until it is done
    (docs/operations.md).

    A kind (the button's action_id, or the subcommand's) and the few fields its work needs,
    never the message the button was on; a command's response_url and typed words are the
    payload's `private` part, erased once used and when the job is done or dropped. The
    signature of the Slack request that started it is unique: a replay of that request within
    Slack's window adds nothing (docs/security.md). A finished job stays until `expires_at`,
    when its signature could no longer pass the signature check.
    """

    __tablename__ = "slack_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # JSON (Click; handlers/commands.py's command_job)
    signature: Mapped[str | None] = mapped_column(String(64), unique=True)  # hex HMAC-SHA256
    state: Mapped[str] = mapped_column(String(16), default=SlackJobState.WAITING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ready_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(120))  # an exception's class name

    __table_args__ = (Index("ix_slack_jobs_state_ready", "state", "ready_at"),)


class SlackRateBucket(Base):
    """A token bucket of Slack calls, one per workspace token and rate tier, shared by every
    dispatcher (bot/delivery/pacing.py). Times are unix seconds."""

    __tablename__ = "slack_rate_buckets"

    bucket: Mapped[str] = mapped_column(String(80), primary_key=True)  # token digest:tier
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    blocked_until: Mapped[float | None] = mapped_column(Float)


class RetentionRun(Base):
    """One row a day: the dispatcher that claimed the day's retention run, so that several
    dispatchers run it once a day between them (bot/services/retention.py, docs/security.md).
    The row is written in the run's own transaction: a run that fails leaves no row."""

    __tablename__ = "retention_runs"

    day: Mapped[date] = mapped_column(Date, primary_key=True)  # the run's date, service time
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ran_by: Mapped[str] = mapped_column(String(64))  # the dispatcher's instance id
    referrals_purged: Mapped[int] = mapped_column(Integer)


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
    "rota_imported",
    "prompt_rerouted",  # a prompt passed over someone nobody could reach (bot/delivery/failures.py)
    "unreachable",  # someone could not be reached by any channel; the on-call holders were told
    # Closing the loop (docs/closing-the-loop.md)
    "information_notice_sent",
    "contact_confirmed",
    "contact_missed",
    "referral_purged",  # retention erased its personal data (bot/services/retention.py)
    # On-call alerts (docs/reference/slack.md, "On-call alerts")
    "on_call_acknowledged",
    "on_call_repaged",
    "on_call_unanswered",
    # A late copy of a message, sent by a dispatcher that froze past its claim, taken back
    # (bot/delivery/confirm.py, docs/timing.md "Claims")
    "duplicate_deleted",
    # The work of a click or a slash command, failed past its attempts (or a command's
    # response_url expired) and given up (bot/slackjobs/runner.py)
    "slack_job_dropped",
    # A message cancelled as it was sent, whose dispatcher died, that cannot be looked for
    # (bot/delivery/reconcile.py, docs/timing.md "Cancelled in a batch")
    "send_outcome_unknown",
)
