"""The dispatcher: delivers the outbox to Slack exactly once, never dropping a row.

Each row goes through three steps, and no transaction is open while Slack is called:

1. *claim* (short transaction, committed): the row is ours until a lease ends;
2. *post* (no transaction): chat.postMessage, or, when an earlier attempt may already have
   posted (its dispatcher died, or the post failed ambiguously), first a search of the channel's
   history for a message whose metadata carries this prompt_id;
3. *confirm* (short transaction): sent with channel/ts, audited, target state updated.

A dispatcher that dies between 2 and 3 leaves a claimed row whose lease expires; whoever claims
it next searches history before posting, so the message is neither lost nor sent twice.
The database is the only source of truth; APScheduler (in memory) only decides when to look.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.slack import (
    PostedMessage,
    SlackAuthError,
    SlackError,
    SlackMessenger,
    SlackRecipientError,
    SlackRequestError,
    SlackTransientError,
    make_web_client,
)
from bot.clock import Clock, SystemClock, clock_from_env
from bot.delivery import escalation, outbox
from bot.delivery.kinds import (
    ALERT_ROW_KINDS,
    RESPONSE_KINDS,
    AlertKind,
    OutboxKind,
    RowState,
    TargetState,
)
from bot.delivery.metadata import PROMPT_EVENT_TYPE, alert_tag, card_tag, prompt_tag
from bot.models import OutboxMessage, Referral, ReferralStatus, Target
from bot.services import audit
from bot.settings import Settings, SettingsError
from handlers.blocks.alerts import build_alert_message
from handlers.blocks.card import build_card
from handlers.blocks.prompt import build_prompt_message
from handlers.home import refresh_homes
from rota.models import Person
from rota.planner import TargetError, plan_referral, resolve_recipient
from rota.store import RotaStore
from rota.worktime import working_time_for

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 30
DEFAULT_BATCH_SIZE = 20
DEFAULT_LEASE = timedelta(minutes=10)
LATE_GRACE = timedelta(minutes=2)
# How far before the first claim a message for the row could carry a timestamp: covers clock
# skew between us and Slack.
HISTORY_MARGIN = timedelta(minutes=10)
CARD_WAIT = timedelta(seconds=5)  # a card waits while an earlier card row is still in flight
AUTH_ALERT_EVERY = timedelta(minutes=15)
# Target states after which a held prompt is no longer owed.
FINISHED_TARGET_STATES = frozenset({*RESPONSE_KINDS, TargetState.CANCELLED, "closed"})
SAFETY_JOB_ID = "handover-dispatch-safety"


@dataclass
class DispatchStats:
    """What one pass (or several, merged) did."""

    claimed: int = 0
    sent: int = 0  # prompts (kind `prompt`) delivered
    late: int = 0
    alerts: int = 0  # on-call, long-gap, unroutable and delivery-failure alerts delivered
    cards: int = 0  # card posts and updates
    escalations: int = 0  # reminders, escalations, channel posts and breaches performed
    found_in_history: int = 0
    retrying: int = 0
    failed: int = 0
    rescheduled: int = 0
    cancelled: int = 0
    deferred: int = 0
    lost_claims: int = 0
    unreachable: int = 0

    def add(self, other: DispatchStats) -> None:
        """Add another pass's figures to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        """One line for `handover dispatch --once`."""
        return (
            f"dispatch: {self.sent} prompts sent ({self.late} late), {self.alerts} alerts, "
            f"{self.cards} card updates, {self.escalations} escalation steps, "
            f"{self.found_in_history} found already in Slack, "
            f"{self.retrying} to retry, {self.failed} failed, {self.rescheduled} rescheduled, "
            f"{self.cancelled} cancelled"
        )


@dataclass
class _Delivery:
    """What step 2 must do for one row, decided in step 1's transaction."""

    prompt_id: int
    kind: str
    referral_id: str
    channel: str  # a user ID (DM) or a channel ID
    message: dict[str, Any]
    metadata: dict[str, Any] | None
    update_ts: str | None = None  # chat.update of this message instead of posting
    check_history: bool = False
    oldest: float | None = None
    recipient: str | None = None  # person_id, or the channel ID when via == channel
    target: str | None = None
    via: str | None = None
    due_at: datetime | None = None
    first_claimed_at: datetime | None = None  # no earlier attempt can have posted before this
    earlier_attempt_at: datetime | None = None  # the latest earlier attempt that may have posted
    audit_detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Lookup:
    """Step 1 needs a Slack user ID that only users.lookupByEmail can give."""

    person_id: str
    email: str | None


@dataclass
class _Done:
    """Step 1 settled the row without Slack (cancelled, rescheduled, failed, deferred, lost)."""

    outcome: str


class _AuthBroken(Exception):
    """Raised inside a pass to stop it: the token is refused, every call would fail."""


def new_instance_id() -> str:
    """hostname:pid:random, unique per dispatcher (fits Prompt.claimed_by)."""
    host = socket.gethostname().split(".")[0][:30]
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


def interval_from_env(environ: dict[str, str] | None = None) -> float:
    """HANDOVER_DISPATCH_INTERVAL (seconds between safety passes), default 30."""
    env = os.environ if environ is None else environ
    text = env.get("HANDOVER_DISPATCH_INTERVAL", "").strip()
    if not text:
        return float(DEFAULT_INTERVAL_SECONDS)
    try:
        value = float(text)
    except ValueError as exc:
        raise SettingsError("HANDOVER_DISPATCH_INTERVAL must be a number of seconds") from exc
    if value <= 0:
        raise SettingsError("HANDOVER_DISPATCH_INTERVAL must be positive")
    return value


def _audit(session: Session, event: str, *, at: datetime, **fields: Any) -> None:
    """Append an event the dispatcher performed to the audit log."""
    audit.record(session, event, at=at, actor=escalation.ACTOR, **fields)


def _target_of(session: Session, prompt: OutboxMessage) -> Target | None:
    return session.get(Target, prompt.target_id) if prompt.target_id else None


def _local_iso(instant: datetime | None, settings: Settings) -> str | None:
    return instant.astimezone(settings.timezone).isoformat() if instant else None


class Dispatcher:
    """Delivers due outbox rows: `run_once` for one pass, `start`/`shutdown` in the background."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        client: WebClient,
        clock: Clock,
        instance_id: str | None = None,
        *,
        interval_seconds: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.slack = SlackMessenger(client)
        self.clock = clock
        self.instance_id = instance_id or new_instance_id()
        self.interval_seconds = interval_seconds or interval_from_env()
        self.batch_size = batch_size
        self.lease = lease
        self._stopping = threading.Event()
        self._pass_lock = threading.Lock()
        self._rerun = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._wake_job = None
        self._wake_lock = threading.Lock()
        self._last_auth_alert: datetime | None = None

    # ----- one pass ------------------------------------------------------------------------

    def run_once(self) -> DispatchStats:
        """Deliver everything due now, batch by batch, until nothing due is left."""
        stats = DispatchStats()
        with self._pass_lock:
            while not self._stopping.is_set():
                now = self.clock.now()
                with self.session_factory.begin() as session:
                    claimed = outbox.claim_due(
                        session,
                        now,
                        instance_id=self.instance_id,
                        limit=self.batch_size,
                        lease=self.lease,
                    )
                    ids = [p.id for p in claimed]
                if not ids:
                    break
                stats.claimed += len(ids)
                try:
                    for index, prompt_id in enumerate(ids):
                        if self._stopping.is_set():
                            # Graceful stop: hand the rest back at once rather than at lease end.
                            self._hand_back(ids[index:], stats)
                            break
                        self._process(prompt_id, stats)
                except _AuthBroken:
                    self._hand_back(ids[index + 1 :], stats)
                    break
        return stats

    def _hand_back(self, prompt_ids: list[int], stats: DispatchStats) -> None:
        now = self.clock.now()
        with self.session_factory.begin() as session:
            for prompt_id in prompt_ids:
                if outbox.defer(session, prompt_id, instance_id=self.instance_id, until=now):
                    stats.deferred += 1

    def _process(self, prompt_id: int, stats: DispatchStats) -> None:
        """Steps 1 to 3 for one claimed row."""
        attempted_post = False
        try:
            for _ in range(2):  # a second round after a users.lookupByEmail
                now = self.clock.now()
                with self.session_factory.begin() as session:
                    step = self._prepare(session, prompt_id, now)
                if not isinstance(step, _Lookup):
                    break
                self._lookup_and_store(step)
            if isinstance(step, _Lookup):
                raise SlackRecipientError(
                    f"no Slack user for {step.person_id}", method="prepare", error="no_slack_user"
                )
            if isinstance(step, _Done):
                self._count_done(step.outcome, stats)
                return
            if isinstance(step, escalation.StepPlan):
                attempted_post = True
                results = escalation.send_step(self.slack, step)
                with self.session_factory.begin() as session:
                    outcome = escalation.record_step(
                        session,
                        prompt_id,
                        step,
                        results,
                        now=self.clock.now(),
                        settings=self.settings,
                        instance_id=self.instance_id,
                    )
                self._count_done(outcome.dispatch_outcome, stats)
                return
            attempted_post = True
            posted, found = self._deliver(step)
            if self._confirm(step, posted, found, stats) and step.kind == OutboxKind.PROMPT:
                self._refresh_recipient_home(step)
        except SlackTransientError as exc:
            self._on_transient(prompt_id, exc, stats)
        except SlackAuthError as exc:
            self._on_auth(prompt_id, exc, stats)
            raise _AuthBroken from exc
        except (SlackRecipientError, SlackRequestError) as exc:
            if exc.error == "account_inactive" and not self._bot_token_works():
                self._on_auth(
                    prompt_id, SlackAuthError(str(exc), method=exc.method, error=exc.error), stats
                )
                raise _AuthBroken from exc
            self._on_permanent(prompt_id, exc, stats)
        except Exception:
            # A bug or the database: keep the row (the lease or this release brings it back),
            # and doubt whether Slack already has it.
            logger.exception("dispatching prompt %s failed", prompt_id)
            try:
                with self.session_factory.begin() as session:
                    released = outbox.release_for_retry(
                        session,
                        prompt_id,
                        instance_id=self.instance_id,
                        now=self.clock.now(),
                        error="internal error",
                        may_have_posted=attempted_post,
                    )
                if released is not None:
                    stats.retrying += 1
            except Exception:
                logger.exception("could not release prompt %s; its lease will expire", prompt_id)

    def _refresh_recipient_home(self, delivery: _Delivery) -> None:
        """Best effort: show the new prompt on its recipient's App Home (a DM's user ID)."""
        user = delivery.channel
        if user[:1] not in ("U", "W"):
            return  # a team channel was prompted: nobody's Home to redraw
        try:
            refresh_homes(
                self.slack.client, self.session_factory, [user], self.clock.now(), self.settings
            )
        except Exception:
            # The prompt is delivered and recorded; a stale Home is redrawn when next opened.
            logger.exception(
                "could not refresh the App Home of %s after prompt %s", user, delivery.prompt_id
            )

    def _bot_token_works(self) -> bool:
        try:
            return self.slack.bot_token_works()
        except SlackError:
            return True  # unknown: do not stop everything on a guess

    @staticmethod
    def _count_done(outcome: str, stats: DispatchStats) -> None:
        if outcome == "lost":
            stats.lost_claims += 1
        else:
            setattr(stats, outcome, getattr(stats, outcome) + 1)

    # ----- step 1: decide what to send ---------------------------------------------------------

    def _prepare(
        self, session: Session, prompt_id: int, now: datetime
    ) -> _Delivery | _Lookup | _Done | escalation.StepPlan:
        step = self._decide(session, prompt_id, now)
        if isinstance(step, _Delivery):
            # Committed before the post: if this attempt's message reaches Slack but the process
            # dies, the next attempt finds it in history and dates it to this attempt.
            prompt = session.get(OutboxMessage, prompt_id)
            assert prompt is not None
            step = replace(step, earlier_attempt_at=outbox.last_post_attempt_at(prompt))
            outbox.note(prompt, last_post_attempt_at=now.isoformat())
        return step

    def _decide(
        self, session: Session, prompt_id: int, now: datetime
    ) -> _Delivery | _Lookup | _Done | escalation.StepPlan:
        prompt = outbox.renew_claim(
            session, prompt_id, instance_id=self.instance_id, now=now, lease=self.lease
        )
        if prompt is None:
            return _Done("lost")
        referral = session.get(Referral, prompt.referral_id)
        if referral is None:
            outbox.mark_failed(
                session, prompt_id, instance_id=self.instance_id, now=now, error="no referral"
            )
            return _Done("failed")
        if prompt.kind == OutboxKind.CARD:
            return self._prepare_card(session, prompt, referral, now)
        if referral.status == ReferralStatus.CLOSED:
            return self._cancel(session, prompt, referral, now, "referral closed")
        if prompt.kind == OutboxKind.PROMPT:
            return self._prepare_prompt(session, prompt, referral, now)
        if prompt.kind == OutboxKind.ESCALATION:
            outbox.note(prompt, first_claimed_wall=self._wall_first_claim(prompt))
            return escalation.plan_step(session, prompt, now=now, settings=self.settings)
        if prompt.kind in ALERT_ROW_KINDS:
            return self._prepare_alert(session, prompt, referral, now)
        # A kind this version does not know (written by newer code): keep it, loudly.
        logger.error("outbox row %s has unknown kind %r; retrying later", prompt.id, prompt.kind)
        outbox.release_for_retry(
            session, prompt.id, instance_id=self.instance_id, now=now, error="unknown kind"
        )
        return _Done("retrying")

    def _history_window(self, prompt: OutboxMessage) -> tuple[bool, float | None]:
        if not outbox.needs_check(prompt):
            return False, None
        state = outbox.dispatch_state(prompt)
        starts = [outbox.first_claimed_at(prompt)]
        wall = state.get("first_claimed_wall")
        if wall:
            starts.append(datetime.fromisoformat(wall))
        known = [s for s in starts if s is not None]
        if not known:
            return True, None
        return True, (min(known) - HISTORY_MARGIN).timestamp()

    def _delivery(
        self,
        prompt: OutboxMessage,
        referral: Referral,
        channel: str,
        message: dict[str, Any],
        check_history: bool,
        oldest: float | None,
        **kind_specific: Any,
    ) -> _Delivery:
        """A delivery of `message` for `prompt`: the fields every kind shares, plus its own."""
        return _Delivery(
            prompt_id=prompt.id,
            kind=prompt.kind,
            referral_id=referral.referral_id,
            channel=channel,
            message=message,
            metadata=self._metadata(prompt),
            check_history=check_history,
            oldest=oldest,
            due_at=prompt.due_at,
            first_claimed_at=outbox.first_claimed_at(prompt),
            **kind_specific,
        )

    @staticmethod
    def _metadata(prompt: OutboxMessage) -> dict[str, Any]:
        """The row's message metadata: only a prompt is a `handover_prompt` (CONTRACT §6)."""
        if prompt.kind == OutboxKind.PROMPT:
            return prompt_tag(prompt.referral_id, prompt.id).metadata
        if prompt.kind == OutboxKind.CARD:
            return card_tag(prompt.referral_id, prompt.id).metadata
        return alert_tag(prompt.kind, prompt.referral_id, prompt.id).metadata

    def _cancel(
        self,
        session: Session,
        prompt: OutboxMessage,
        referral: Referral,
        now: datetime,
        reason: str,
    ) -> _Done:
        outbox.mark_cancelled(session, prompt.id, instance_id=self.instance_id, reason=reason)
        if prompt.kind == OutboxKind.PROMPT:
            target = _target_of(session, prompt)
            _audit(
                session,
                "prompt_cancelled",
                at=now,
                referral_id=referral.referral_id,
                target=target.spec if target else None,
                detail={"reason": reason, "prompt_id": prompt.id},
            )
        return _Done("cancelled")

    def _slack_user_for(self, store: RotaStore, person_id: str) -> str | _Lookup:
        person = store.person(person_id)
        if person is None:
            return _Lookup(person_id=person_id, email=None)
        if person.slack_user_id:
            return person.slack_user_id
        return _Lookup(person_id=person_id, email=person.email)

    def _respond_by(self, store: RotaStore, target: str, recipient: str, now: datetime) -> datetime:
        tz = self.settings.timezone
        return working_time_for(store, recipient, target, tz).end_of_working_day(now)

    def _prepare_prompt(
        self, session: Session, prompt: OutboxMessage, referral: Referral, now: datetime
    ) -> _Delivery | _Lookup | _Done:
        target = _target_of(session, prompt)
        if target is None:
            outbox.mark_failed(
                session, prompt.id, instance_id=self.instance_id, now=now, error="no target"
            )
            return _Done("failed")
        if target.state in FINISHED_TARGET_STATES:
            return self._cancel(session, prompt, referral, now, f"target already {target.state}")
        check, oldest = self._history_window(prompt)
        store = RotaStore(session)
        tz = self.settings.timezone
        if check and prompt.recipient_id and prompt.address:
            # An earlier attempt chose a recipient: look where it would have posted.
            recipient, via, channel = prompt.recipient_id, self._via_of(prompt), prompt.address
        else:
            link = resolve_recipient(store, target.spec, now, tz)
            if link is None:
                return self._replan(session, store, prompt, referral, target, now)
            recipient, via = link.recipient, link.via
            if via == "channel":
                channel = recipient
            else:
                slack_user = self._slack_user_for(store, recipient)
                if isinstance(slack_user, _Lookup):
                    prompt.recipient_id = recipient  # named in the alert if the lookup fails
                    return slack_user
                channel = slack_user
        # Remember the choice, so a later check searches the same place.
        prompt.recipient_id = recipient
        prompt.address = channel
        outbox.note(prompt, via=via, first_claimed_wall=self._wall_first_claim(prompt))
        respond_by = self._respond_by(store, target.spec, recipient, now)
        message = build_prompt_message(
            referral,
            prompt.id,
            due_at=prompt.due_at,
            respond_by=respond_by,
            tz=tz,
            via=via,
            target=target.spec,
        )
        return self._delivery(
            prompt,
            referral,
            channel,
            message,
            check,
            oldest,
            recipient=recipient,
            target=target.spec,
            via=via,
            audit_detail={"respond_by": _local_iso(respond_by, self.settings)},
        )

    @staticmethod
    def _via_of(prompt: OutboxMessage) -> str | None:
        return outbox.dispatch_state(prompt).get("via")

    def _wall_first_claim(self, prompt: OutboxMessage) -> str:
        # Slack stamps messages with its own clock; when ours is simulated (tests, demo) the
        # two differ, so the history search also starts from the wall-clock first claim.
        existing = outbox.dispatch_state(prompt).get("first_claimed_wall")
        return existing or SystemClock().now().isoformat()

    def _replan(
        self,
        session: Session,
        store: RotaStore,
        prompt: OutboxMessage,
        referral: Referral,
        target: Target,
        now: datetime,
    ) -> _Done:
        """Nobody in the chain is at work now (the rota changed): hold until someone is."""
        tz = self.settings.timezone
        try:
            plan = plan_referral(store, [target.spec], now, alert_roles=(), tz=tz)
            entry = plan.entries[0]
        except TargetError as exc:
            logger.warning(
                "target %s of %s no longer routable: %s", target.spec, referral.referral_id, exc
            )
            entry = None
        if entry is not None and entry.due_at is not None and entry.due_at > now:
            outbox.reschedule(session, prompt.id, instance_id=self.instance_id, due_at=entry.due_at)
            target.due_at = entry.due_at
            _audit(
                session,
                "prompt_scheduled",
                at=now,
                referral_id=referral.referral_id,
                recipient=entry.recipient,
                target=target.spec,
                detail={
                    "rescheduled": True,
                    "reason": "nobody in the chain is at work now",
                    "due_at": _local_iso(entry.due_at, self.settings),
                    "via": entry.via,
                    "previous_due_at": _local_iso(prompt.due_at, self.settings),
                },
                rota_version=store.current_rota_version(),
            )
            self._refresh_card(session, referral, now)
            return _Done("rescheduled")
        # Nobody within 7 days: a person must act, so say so where the EDT will see it.
        outbox.mark_failed(
            session, prompt.id, instance_id=self.instance_id, now=now, error="unroutable"
        )
        target.state = TargetState.UNROUTABLE
        detail = "nobody in the chain is at work within 7 days (the rota changed)"
        _audit(
            session,
            "unroutable",
            at=now,
            referral_id=referral.referral_id,
            target=target.spec,
            detail={"reason": detail, "prompt_id": prompt.id},
            rota_version=store.current_rota_version(),
        )
        self._enqueue_alert(
            session,
            OutboxKind.UNROUTABLE,
            referral.referral_id,
            now,
            target=target.spec,
            detail=detail,
        )
        self._refresh_card(session, referral, now)
        return _Done("failed")

    def _prepare_alert(
        self, session: Session, prompt: OutboxMessage, referral: Referral, now: datetime
    ) -> _Delivery | _Lookup | _Done:
        detail = outbox.load_detail(prompt)
        check, oldest = self._history_window(prompt)
        target = detail.get("role") if prompt.kind == OutboxKind.ON_CALL else detail.get("target")
        channel: str | None
        if prompt.kind == OutboxKind.DELIVERY_FAILURE:
            channel = prompt.address or self.settings.edt_channel
        elif prompt.recipient_id:
            # The on-call holder gets the alert in a DM.
            slack_user = (
                prompt.address
                if check and prompt.address
                else self._slack_user_for(RotaStore(session), prompt.recipient_id)
            )
            if isinstance(slack_user, _Lookup):
                return slack_user
            channel = slack_user
        else:
            channel = prompt.address or self.settings.edt_channel
        if not channel:
            logger.error(
                "no channel for %s alert of %s: set HANDOVER_EDT_CHANNEL",
                prompt.kind,
                referral.referral_id,
            )
            outbox.mark_failed(
                session, prompt.id, instance_id=self.instance_id, now=now, error="no channel"
            )
            return _Done("failed")
        prompt.address = channel
        outbox.note(prompt, first_claimed_wall=self._wall_first_claim(prompt))
        message = build_alert_message(
            prompt.kind,
            referral,
            tz=self.settings.timezone,
            target=target,
            recipient=detail.get("person_id"),
            detail=detail.get("detail"),
            reason=detail.get("reason"),
        )
        return self._delivery(
            prompt,
            referral,
            channel,
            message,
            check,
            oldest,
            recipient=prompt.recipient_id,
            target=target,
            audit_detail={"detail": detail.get("detail")} if detail.get("detail") else {},
        )

    def _prepare_card(
        self, session: Session, prompt: OutboxMessage, referral: Referral, now: datetime
    ) -> _Delivery | _Done:
        channel = referral.card_channel or prompt.address or self.settings.edt_channel
        if not channel:
            logger.warning(
                "no HANDOVER_EDT_CHANNEL: the card of %s is not posted", referral.referral_id
            )
            outbox.mark_cancelled(
                session, prompt.id, instance_id=self.instance_id, reason="no EDT channel"
            )
            return _Done("cancelled")
        if referral.card_ts is None and outbox.unfinished_card_before(
            session, referral.referral_id, prompt.id
        ):
            # The first card is still on its way; posting now would make a second card.
            outbox.defer(session, prompt.id, instance_id=self.instance_id, until=now + CARD_WAIT)
            return _Done("deferred")
        check, oldest = self._history_window(prompt)
        prompt.address = channel
        outbox.note(prompt, first_claimed_wall=self._wall_first_claim(prompt))
        targets = list(
            session.scalars(select(Target).where(Target.referral_id == referral.referral_id))
        )
        message = build_card(
            referral,
            targets,
            tz=self.settings.timezone,
            recipients=self._recipient_labels(session, referral.referral_id),
            updated_at=now,
        )
        return self._delivery(
            prompt,
            referral,
            channel,
            message,
            check and referral.card_ts is None,
            oldest,
            update_ts=referral.card_ts,
        )

    def _recipient_labels(self, session: Session, referral_id: str) -> dict[int, str]:
        rows = session.execute(
            select(OutboxMessage.target_id, OutboxMessage.recipient_id, OutboxMessage.address)
            .where(
                OutboxMessage.referral_id == referral_id,
                OutboxMessage.kind == OutboxKind.PROMPT,
                OutboxMessage.state == RowState.SENT,
            )
            .order_by(OutboxMessage.sent_at)
        ).all()
        labels: dict[int, str] = {}
        for target_id, recipient_id, channel_id in rows:
            if target_id is None:
                continue
            if channel_id and channel_id[:1] in ("U", "W"):
                labels[target_id] = f"<@{channel_id}>"
            elif channel_id and channel_id[:1] in ("C", "G"):
                labels[target_id] = f"<#{channel_id}>"
            elif recipient_id:
                labels[target_id] = f"`{recipient_id}`"
        return labels

    def _lookup_and_store(self, lookup: _Lookup) -> None:
        """users.lookupByEmail (outside any transaction), stored into Person.slack_user_found."""
        if not lookup.email:
            raise SlackRecipientError(
                f"{lookup.person_id} has no Slack user and no email",
                method="users.lookupByEmail",
                error="no_slack_user",
            )
        user_id = self.slack.lookup_user_by_email(lookup.email)
        if user_id is None:
            raise SlackRecipientError(
                f"no Slack user for {lookup.person_id}",
                method="users.lookupByEmail",
                error="users_not_found",
            )
        with self.session_factory.begin() as session:
            person = session.get(Person, lookup.person_id)
            if person is not None:
                person.slack_user_found = user_id

    # ----- step 2: talk to Slack (no transaction open) ------------------------------------------

    def _deliver(self, delivery: _Delivery) -> tuple[PostedMessage, bool]:
        """Post (or update), unless a history search finds the message already there."""
        if delivery.check_history and delivery.metadata is not None:
            channel = delivery.channel
            if channel[:1] in ("U", "W"):
                channel = self.slack.open_dm(channel)
            # The row's own message: a prompt by its prompt_id, a card or an alert by its row_id.
            event_type = delivery.metadata["event_type"]
            key = "prompt_id" if event_type == PROMPT_EVENT_TYPE else "row_id"
            found = self.slack.find_message(
                channel,
                event_type=event_type,
                payload_match={key: delivery.prompt_id},
                oldest=delivery.oldest,
            )
            if found is not None:
                logger.info(
                    "%s %s was already in Slack (ts %s)",
                    delivery.kind,
                    delivery.prompt_id,
                    found.ts,
                )
                return found, True
        text, blocks = delivery.message["text"], delivery.message["blocks"]
        if delivery.update_ts:
            posted = self.slack.update_message(
                delivery.channel, delivery.update_ts, text=text, blocks=blocks
            )
            return posted, False
        assert delivery.metadata is not None
        posted = self.slack.post_message(
            delivery.channel, text=text, blocks=blocks, metadata=delivery.metadata
        )
        return posted, False

    # ----- step 3: confirm ------------------------------------------------------------------

    @staticmethod
    def _posted_at(delivery: _Delivery, found: bool, now: datetime) -> datetime:
        """When the message reached Slack: now, or for one an earlier attempt posted (found in
        history), when the latest earlier attempt began (rows from before that bookkeeping: the
        first claim) — never before the row was due, never after now."""
        posted_at = delivery.earlier_attempt_at or delivery.first_claimed_at
        if not found or posted_at is None:
            return now
        if delivery.due_at is not None and delivery.due_at > posted_at:
            posted_at = delivery.due_at
        return min(posted_at, now)

    def _confirm(
        self, delivery: _Delivery, posted: PostedMessage, found: bool, stats: DispatchStats
    ) -> bool:
        """Step 3; False when the claim was lost (another dispatcher confirms instead)."""
        now = self.clock.now()
        sent_at = self._posted_at(delivery, found, now)
        late = (
            delivery.kind == OutboxKind.PROMPT
            and delivery.due_at is not None
            and sent_at - delivery.due_at > LATE_GRACE
        )
        with self.session_factory.begin() as session:
            prompt = outbox.mark_sent(
                session,
                delivery.prompt_id,
                instance_id=self.instance_id,
                now=sent_at,
                channel=posted.channel,
                ts=posted.ts,
                late=late,
            )
            if prompt is None:
                # Our lease ran out and another dispatcher took the row; it will find this
                # message in history and confirm it, so nothing is logged twice.
                logger.warning("lost the claim on prompt %s after posting", delivery.prompt_id)
                stats.lost_claims += 1
                return False
            referral = session.get(Referral, delivery.referral_id)
            assert referral is not None
            base: dict[str, Any] = {"channel": posted.channel, "ts": posted.ts}
            if found:
                base["found_in_history"] = True
                base["found_at"] = _local_iso(now, self.settings)
            if delivery.kind == OutboxKind.PROMPT:
                self._audit_prompt_sent(
                    session, prompt, referral, delivery, base, sent_at=sent_at, now=now, late=late
                )
                # The escalation clock runs from sent_at; a step already past is performed at
                # once, marked late.
                escalation.schedule_escalation(session, prompt, now=now, settings=self.settings)
            elif delivery.kind == OutboxKind.ON_CALL:
                _audit(
                    session,
                    "on_call_alerted",
                    at=sent_at,
                    referral_id=referral.referral_id,
                    recipient=delivery.recipient,
                    target=delivery.target,
                    detail={**delivery.audit_detail, **base},
                )
            elif delivery.kind == OutboxKind.CARD and referral.card_ts is None:
                referral.card_channel = posted.channel
                referral.card_ts = posted.ts
        if delivery.kind == OutboxKind.PROMPT:
            stats.sent += 1
        elif delivery.kind == OutboxKind.CARD:
            stats.cards += 1
        else:
            stats.alerts += 1
        stats.late += int(late)
        stats.found_in_history += int(found)
        return True

    def _audit_prompt_sent(
        self,
        session: Session,
        prompt: OutboxMessage,
        referral: Referral,
        delivery: _Delivery,
        base: dict[str, Any],
        *,
        sent_at: datetime,
        now: datetime,
        late: bool,
    ) -> None:
        detail: dict[str, Any] = {
            "via": delivery.via,
            "due_at": _local_iso(delivery.due_at, self.settings),
            "sent_at": _local_iso(sent_at, self.settings),
            "prompt_id": prompt.id,
            **delivery.audit_detail,
            **base,
        }
        if late and delivery.due_at is not None:
            detail["delay_minutes"] = int((sent_at - delivery.due_at).total_seconds() // 60)
        store = RotaStore(session)
        _audit(
            session,
            "prompt_sent_late" if late else "prompt_sent",
            at=sent_at,
            referral_id=referral.referral_id,
            recipient=delivery.recipient,
            target=delivery.target,
            detail=detail,
            rota_version=store.current_rota_version(),
        )
        target = _target_of(session, prompt)
        if target is not None and target.state in (TargetState.HELD, TargetState.FAILED):
            target.state = TargetState.PROMPTED
            self._refresh_card(session, referral, now)

    # ----- failures -------------------------------------------------------------------------

    def _audit_failure(
        self,
        session: Session,
        prompt: OutboxMessage,
        now: datetime,
        reason: str,
        *,
        will_retry: bool,
        retry_at: datetime | None = None,
    ) -> None:
        if prompt.kind not in (OutboxKind.PROMPT, OutboxKind.ON_CALL):
            return  # alerts and cards have no audit event of their own
        target = _target_of(session, prompt)
        detail: dict[str, Any] = {
            "kind": prompt.kind,
            "reason": reason,
            "attempts": prompt.attempts,
            "will_retry": will_retry,
            "prompt_id": prompt.id,
        }
        if retry_at is not None:
            detail["retry_at"] = _local_iso(retry_at, self.settings)
        _audit(
            session,
            "prompt_failed",
            at=now,
            referral_id=prompt.referral_id,
            recipient=prompt.recipient_id,
            target=target.spec if target else outbox.load_detail(prompt).get("role"),
            detail=detail,
        )

    def _on_transient(self, prompt_id: int, exc: SlackTransientError, stats: DispatchStats) -> None:
        now = self.clock.now()
        not_before = now + timedelta(seconds=exc.retry_after) if exc.retry_after else None
        with self.session_factory.begin() as session:
            prompt = outbox.release_for_retry(
                session,
                prompt_id,
                instance_id=self.instance_id,
                now=now,
                error=exc.error,
                may_have_posted=exc.ambiguous,
                not_before=not_before,
            )
            if prompt is None:
                stats.lost_claims += 1
                return
            self._audit_failure(
                session, prompt, now, exc.error, will_retry=True, retry_at=prompt.next_attempt_at
            )
        stats.retrying += 1
        if exc.error.startswith("connection:"):
            stats.unreachable += 1

    def _on_permanent(self, prompt_id: int, exc: SlackError, stats: DispatchStats) -> None:
        now = self.clock.now()
        with self.session_factory.begin() as session:
            prompt = outbox.mark_failed(
                session, prompt_id, instance_id=self.instance_id, now=now, error=exc.error
            )
            if prompt is None:
                stats.lost_claims += 1
                return
            self._audit_failure(session, prompt, now, exc.error, will_retry=False)
            if prompt.kind in (OutboxKind.PROMPT, OutboxKind.ON_CALL):
                target = _target_of(session, prompt)
                if target is not None and target.state == TargetState.HELD:
                    target.state = TargetState.FAILED
                self._enqueue_alert(
                    session,
                    OutboxKind.DELIVERY_FAILURE,
                    prompt.referral_id,
                    now,
                    target=target.spec if target else outbox.load_detail(prompt).get("role"),
                    person_id=prompt.recipient_id,
                    reason=exc.error,
                )
                referral = session.get(Referral, prompt.referral_id)
                if referral is not None and target is not None:
                    self._refresh_card(session, referral, now)
            else:
                logger.error(
                    "could not post %s for %s: %s", prompt.kind, prompt.referral_id, exc.error
                )
        stats.failed += 1

    def _on_auth(self, prompt_id: int, exc: SlackError, stats: DispatchStats) -> None:
        logger.error(
            "SLACK REFUSED THE BOT TOKEN (%s): nothing can be delivered until it is fixed; "
            "prompts stay in the outbox and are retried",
            exc.error,
        )
        now = self.clock.now()
        referral_id: str | None = None
        with self.session_factory.begin() as session:
            prompt = outbox.release_for_retry(
                session, prompt_id, instance_id=self.instance_id, now=now, error=exc.error
            )
            if prompt is not None:
                referral_id = prompt.referral_id
                self._audit_failure(
                    session,
                    prompt,
                    now,
                    exc.error,
                    will_retry=True,
                    retry_at=prompt.next_attempt_at,
                )
                stats.retrying += 1
        if referral_id is not None:
            self._try_auth_alert(referral_id, exc.error, now)

    def _try_auth_alert(self, referral_id: str, error: str, now: datetime) -> None:
        """Best effort: with a revoked token this fails too, but a scope problem may not."""
        channel = self.settings.edt_channel
        if not channel:
            return
        if self._last_auth_alert and now - self._last_auth_alert < AUTH_ALERT_EVERY:
            return
        self._last_auth_alert = now
        with self.session_factory() as session:
            referral = session.get(Referral, referral_id)
            if referral is None:
                return
            message = build_alert_message(
                AlertKind.SLACK_AUTH, referral, tz=self.settings.timezone, reason=error
            )
        try:
            self.slack.post_message(
                channel,
                text=message["text"],
                blocks=message["blocks"],
                metadata=alert_tag(AlertKind.SLACK_AUTH, referral_id).metadata,
            )
        except SlackError:
            logger.error("could not post the credentials alert either (%s)", error)

    def _enqueue_alert(
        self,
        session: Session,
        kind: str,
        referral_id: str,
        now: datetime,
        *,
        target: str | None = None,
        person_id: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """An alert row for the EDT channel, delivered by the outbox like everything else."""
        if not self.settings.edt_channel:
            logger.error(
                "%s for %s (%s) and no HANDOVER_EDT_CHANNEL to say so", kind, referral_id, target
            )
            return
        payload = {"target": target, "person_id": person_id, "reason": reason, "detail": detail}
        session.add(
            OutboxMessage(
                referral_id=referral_id,
                kind=kind,
                address=self.settings.edt_channel,
                due_at=now,
                state=RowState.PENDING,
                attempts=0,
                detail=outbox.dumps({k: v for k, v in payload.items() if v is not None}),
            )
        )

    def _refresh_card(self, session: Session, referral: Referral, now: datetime) -> None:
        if referral.card_channel or self.settings.edt_channel:
            outbox.enqueue_card_refresh(session, referral.referral_id, now)

    # ----- running in the background -------------------------------------------------------

    def start(self) -> None:
        """Run passes in a background scheduler: at the next due time and every interval."""
        if self._scheduler is not None:
            return
        self._stopping.clear()
        scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self._scheduled_pass,
            "interval",
            seconds=self.interval_seconds,
            id=SAFETY_JOB_ID,
            next_run_time=SystemClock().now(),  # a first pass at once: catch up after downtime
        )
        self._scheduler = scheduler
        scheduler.start()
        logger.info(
            "dispatcher %s started (safety pass every %s s)",
            self.instance_id,
            self.interval_seconds,
        )

    def wake(self) -> None:
        """Ask for a pass now (intake calls this after writing rows that are due at once)."""
        self._schedule_wake_at(SystemClock().now())

    def shutdown(self) -> None:
        """Stop after the current prompt; wait for the running pass to end."""
        self._stopping.set()
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
            logger.info("dispatcher %s stopped", self.instance_id)

    def _scheduled_pass(self) -> None:
        if self._stopping.is_set():
            return
        if not self._pass_lock.acquire(blocking=False):
            self._rerun.set()  # the running pass will go round once more
            return
        self._pass_lock.release()
        try:
            while True:
                self._rerun.clear()
                stats = self.run_once()
                if stats.claimed:
                    logger.info("%s", stats.summary())
                if not self._rerun.is_set() or self._stopping.is_set():
                    break
        except Exception:
            logger.exception("dispatch pass failed; the next pass will retry")
        finally:
            self._plan_next_wake()

    def _plan_next_wake(self) -> None:
        if self._stopping.is_set():
            return
        try:
            with self.session_factory() as session:
                due = outbox.next_due_at(session)
        except Exception:
            logger.exception("could not read the next due time; the safety pass will look")
            return
        if due is None:
            return
        # The scheduler runs on the wall clock; `self.clock` may be simulated, so convert
        # the wait rather than the instant.
        wait = max(timedelta(0), due - self.clock.now())
        self._schedule_wake_at(SystemClock().now() + wait)

    def _schedule_wake_at(self, run_at: datetime) -> None:
        scheduler = self._scheduler
        if scheduler is None or self._stopping.is_set():
            return
        with self._wake_lock:
            if self._wake_job is not None:
                with contextlib.suppress(JobLookupError):  # it may have run already
                    self._wake_job.remove()
            # A fresh id each time: a date job never waits on the previous one's instance.
            self._wake_job = scheduler.add_job(self._scheduled_pass, "date", run_date=run_at)


def dispatch_command(args: argparse.Namespace, settings: Settings) -> int:
    """`handover dispatch [--once]`: one pass and a summary, or run until SIGTERM/SIGINT."""
    from bot.db import create_db_engine, make_session_factory

    if not settings.slack_bot_token:
        raise SettingsError("SLACK_BOT_TOKEN is required by `handover dispatch`")
    engine = create_db_engine(settings.database_url)
    try:
        dispatcher = Dispatcher(
            settings, make_session_factory(engine), make_web_client(settings), clock_from_env()
        )
        if args.once:
            stats = dispatcher.run_once()
            print(stats.summary(), flush=True)
            if stats.unreachable and not (stats.sent or stats.alerts or stats.cards):
                return 3  # Slack unavailable: nothing could be delivered
            return 0
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            logger.info("signal %s: finishing the current prompt", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        dispatcher.start()
        print(f"handover: dispatcher {dispatcher.instance_id} running", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            dispatcher.shutdown()
        return 0
    finally:
        engine.dispose()
