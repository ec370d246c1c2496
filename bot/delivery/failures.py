"""When a row cannot be delivered: retry, give up loudly, or hold everything.

- *Transient* (the channel is down, overloaded, slow): the row goes back to pending with a
  backoff (or until the channel's Retry-After, for a 429); an *ambiguous* failure (it may have
  been sent) makes the next attempt look for the message before sending it again.
- *Unreachable* recipient of a prompt, with no other channel: they are passed over
  (`pass_over`): the prompt goes at once to the next in its target's chain at work
  (`prompt_rerouted`), and the on-call holders are told (`unreachable`; the EDT channel when
  nobody is on call). Nobody left in the chain: the target is unroutable, alerted as such.
- Any other row given up (unreachable, or a request the channel *refused*) is logged and put
  in front of a person: a prompt or an alert to a person, in the EDT channel
  (`delivery_failure`); an escalation step's message to a person, to the on-call holders
  (`unreachable`), and the step's event says it did not reach them; a post the EDT channel
  itself refuses, to the on-call holders. Only an alert about a failure that fails too is
  left to the error log (so failures never chase each other).
- *Credentials refused*: nothing can be sent on that channel, so the row is released and the
  pass stops; the EDT channel is told (at most every 15 minutes), if the channel still allows.
- A *bug* or the database: the row is released, doubted (it may have been sent).

Nothing is dropped: a released row is claimed again; a failed one is in front of a person.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import ChannelError, Message, RecipientUnreachable, TransientError
from bot.clock import Clock
from bot.delivery import escalation, outbox
from bot.delivery.compose import DeliveryContext
from bot.delivery.compose.alert import raise_alert
from bot.delivery.kinds import (
    ACTOR,
    ALERT_ROW_KINDS,
    ANSWERED_TARGET_STATES,
    AlertKind,
    OutboxKind,
    Outcome,
    TargetState,
)
from bot.delivery.metadata import alert_tag
from bot.delivery.reads import store_of, target_of
from bot.delivery.results import RowResult
from bot.models import OutboxMessage, Referral, Target
from bot.services import audit
from handlers.blocks.alerts import build_alert_message
from rota.planner import resolve_recipient

logger = logging.getLogger(__name__)

CREDENTIALS_ALERT_EVERY = timedelta(minutes=15)
# Rows whose failures are logged as `prompt_failed` (with their `kind`): the prompts, every
# alert and the card (escalation messages are logged as their step's event).
_LOGGED_KINDS = (OutboxKind.PROMPT, OutboxKind.CARD, *sorted(ALERT_ROW_KINDS))
# Rows whose retries are logged too (a card redrawn through an outage would flood the log).
_RETRIES_LOGGED = (OutboxKind.PROMPT, OutboxKind.ON_CALL)
# Alerts about a failure: when one fails too, only the error log says so (an `unreachable` DM
# that fails goes to the EDT channel first).
_ABOUT_FAILURES = (OutboxKind.DELIVERY_FAILURE, OutboxKind.UNREACHABLE)


class Failures:
    """Settles rows whose delivery failed, each in its own short transaction."""

    def __init__(
        self, ctx: DeliveryContext, session_factory: sessionmaker[Session], clock: Clock
    ) -> None:
        self.ctx = ctx
        self.session_factory = session_factory
        self.clock = clock
        self._last_credentials_alert: dict[str, datetime] = {}

    def transient(self, row_id: int, exc: TransientError) -> RowResult:
        """Try again after a backoff, or exactly at the channel's Retry-After (a 429: the
        send returned at once rather than wait, and the pacing bucket waits too), searching
        first if the failure was ambiguous."""
        now = self.clock.now()
        retry_at = None
        if exc.retry_after is not None:
            retry_at = now + timedelta(seconds=exc.retry_after)
        with self.session_factory.begin() as session:
            row = outbox.release_for_retry(
                session,
                row_id,
                instance_id=self.ctx.instance_id,
                now=now,
                error=exc.error,
                may_have_posted=exc.ambiguous,
                retry_at=retry_at,
            )
            if row is None:
                return self._not_ours(session, row_id, now, exc)
            self._log_failure(session, row, now, exc.error, retry_at=row.next_attempt_at)
        return RowResult(
            row_id, row.kind, Outcome.RETRYING, reason=exc.error, unreachable=exc.unreachable
        )

    def permanent(self, row_id: int, exc: ChannelError) -> RowResult:
        """Give the row up, and put it in front of a person."""
        now = self.clock.now()
        with self.session_factory.begin() as session:
            row = outbox.mark_failed(
                session, row_id, instance_id=self.ctx.instance_id, now=now, error=exc.error
            )
            if row is None:
                return self._not_ours(session, row_id, now, exc)
            self._log_failure(session, row, now, exc.error)
            self._put_in_front_of_a_person(session, row, now, exc.error)
        return RowResult(row_id, row.kind, Outcome.FAILED, reason=exc.error)

    def pass_over(self, row_id: int, exc: RecipientUnreachable) -> bool:
        """No channel reaches a prompt's recipient: pass them over, so the row is composed again
        at once for the next in its chain at work (`prompt_rerouted`), and tell the on-call
        holders (`unreachable`). False when the row is not a prompt still owed to a person of
        its chain (it is then given up as any other)."""
        now = self.clock.now()
        settings = self.ctx.settings
        tz = settings.timezone
        with self.session_factory.begin() as session:
            row = outbox.owned(session, row_id, self.ctx.instance_id)
            if row is None or row.kind != OutboxKind.PROMPT or row.target_id is None:
                return False
            target = session.get(Target, row.target_id)
            person = exc.person_id or row.recipient_id
            if target is None or not person or target.state in ANSWERED_TARGET_STATES:
                return False
            channels = [*outbox.unreachable_on(row)] or [row.channel or exc.method]
            row = outbox.pass_over(
                session, row_id, instance_id=self.ctx.instance_id, recipient=person, error=exc.error
            )
            assert row is not None
            store = store_of(session)
            version = store.current_rota_version()
            link = resolve_recipient(store, target.spec, now, tz, excluding=outbox.passed_over(row))
            instead = link.recipient if link is not None else "unroutable"
            alerted = raise_alert(
                session,
                settings,
                OutboxKind.UNREACHABLE,
                row.referral_id,
                now,
                to_on_call=True,
                not_to=[person],
                target_id=target.id,
                target=target.spec,
                person_id=person,
                reason=exc.error,
                channel=",".join(channels),
                instead=instead,
            )

            def log(event: str, recipient: str, detail: dict[str, Any]) -> None:
                audit.record(
                    session,
                    event,
                    at=now,
                    referral_id=row.referral_id,
                    actor=ACTOR,
                    recipient=recipient,
                    target=target.spec,
                    detail={**detail, "prompt_id": row.id},
                    rota_version=version,
                )

            log(
                "unreachable",
                person,
                {"reason": exc.error, "channels": channels, "alerted": alerted, "instead": instead},
            )
            if link is not None:
                reason = f"{person} could not be reached ({exc.error})"
                log(
                    "prompt_rerouted",
                    link.recipient,
                    {"from": person, "reason": reason, "error": exc.error, "via": link.via},
                )
            logger.warning(
                "nobody can reach %s for %s %s (%s): the prompt goes to %s",
                person,
                row.referral_id,
                target.spec,
                exc.error,
                instead,
            )
        return True

    def credentials(
        self, row_id: int, exc: ChannelError, *, channel: str | None = None
    ) -> RowResult:
        """The channel refuses the bot: keep the row, and say so once in a while."""
        now = self.clock.now()
        referral_id: str | None = None
        channel_name = channel or self.ctx.channels.for_rooms().name
        not_ours: RowResult | None = None
        with self.session_factory.begin() as session:
            row = outbox.release_for_retry(
                session, row_id, instance_id=self.ctx.instance_id, now=now, error=exc.error
            )
            if row is not None:
                referral_id, channel_name = row.referral_id, row.channel or channel_name
                self._log_failure(session, row, now, exc.error, retry_at=row.next_attempt_at)
            else:
                not_ours = self._not_ours(session, row_id, now, exc)
        logger.error(
            "%s REFUSED THE BOT TOKEN (%s): nothing can be delivered until it is fixed; "
            "prompts stay in the outbox and are retried",
            channel_name.upper(),
            exc.error,
        )
        if row is None:
            assert not_ours is not None
            return not_ours
        if referral_id is not None:
            self._try_credentials_alert(referral_id, exc.error, now, channel_name)
        return RowResult(row_id, row.kind, Outcome.RETRYING, reason=exc.error)

    def internal(self, row_id: int, *, may_have_posted: bool) -> RowResult | None:
        """A bug or the database: keep the row (this release, or its lease, brings it back)."""
        try:
            with self.session_factory.begin() as session:
                row = outbox.release_for_retry(
                    session,
                    row_id,
                    instance_id=self.ctx.instance_id,
                    now=self.clock.now(),
                    error="internal error",
                    may_have_posted=may_have_posted,
                )
        except Exception:
            logger.exception("could not release row %s; its lease will expire", row_id)
            return None
        if row is None:
            return None
        return RowResult(row_id, row.kind, Outcome.RETRYING, reason="internal error")

    def _not_ours(
        self, session: Session, row_id: int, now: datetime, exc: ChannelError
    ) -> RowResult:
        """The send failed on a row no longer ours: cancelled under our claim while its send
        was under way (counted cancelled, its failure logged; nobody is told, it is no longer
        owed), or taken over by another dispatcher (lost; the new holder reports it)."""
        row = outbox.cancelled_under_claim(session, row_id, self.ctx.instance_id)
        if row is None:
            return _lost(row_id)
        ambiguous = isinstance(exc, TransientError) and exc.ambiguous
        if not ambiguous:
            outbox.settle_cancelled(row)  # nothing went out
        elif row.claimed_until is None:
            # It may have reached the channel after another dispatcher looked for it there and
            # settled it (our send outlasted our lease): it is looked for again.
            row.claimed_until = now
        # An ambiguous failure may have reached the channel: once our lease ends it is looked
        # for there (reconcile.py), and recorded as sent if it did.
        self._log_failure(session, row, now, exc.error, cancelled_as=row.last_error)
        logger.warning(
            "%s %s was cancelled (%s) while its send was under way, and the send failed (%s)%s",
            row.kind,
            row_id,
            row.last_error,
            exc.error,
            ": it may have gone out, and is looked for once our lease ends" if ambiguous else "",
        )
        return RowResult(row_id, row.kind, Outcome.CANCELLED, reason=row.last_error)

    # ----- what people are told ---------------------------------------------------------------

    def _log_failure(
        self,
        session: Session,
        row: OutboxMessage,
        now: datetime,
        reason: str,
        *,
        retry_at: datetime | None = None,
        cancelled_as: str | None = None,
    ) -> None:
        info = outbox.load_detail(row)
        # A copy of a prompt (slack+email) is logged as the prompt's own failures are.
        copy_of = info.get("copy_of") if row.kind == OutboxKind.COPY else None
        kind = info.get("copy_of_kind") if row.kind == OutboxKind.COPY else row.kind
        if kind not in _LOGGED_KINDS:
            return
        if retry_at is not None and kind not in _RETRIES_LOGGED:
            return  # a card or an alert being retried: only its giving up is logged
        target = target_of(session, row)
        detail: dict[str, Any] = {
            "kind": row.kind,
            "reason": reason,
            "attempts": row.attempts,
            "will_retry": retry_at is not None,
            "prompt_id": copy_of or row.id,
        }
        if copy_of is not None:
            detail.update(copy_of=copy_of, channel=row.channel)
        if retry_at is not None:
            detail["retry_at"] = retry_at.astimezone(self.ctx.settings.timezone).isoformat()
        if cancelled_as is not None:
            # No longer owed when the send failed: not retried, and nobody is told.
            detail["cancelled_while_sending"] = cancelled_as
        audit.record(
            session,
            "prompt_failed",
            at=now,
            referral_id=row.referral_id,
            actor=ACTOR,
            recipient=row.recipient_id,
            target=target.spec if target else outbox.load_detail(row).get("role"),
            detail=detail,
        )

    def _put_in_front_of_a_person(
        self, session: Session, row: OutboxMessage, now: datetime, error: str
    ) -> None:
        """Whatever was given up, someone hears of it (and the log says so)."""
        edt = self.ctx.settings.edt_channel
        if row.kind == OutboxKind.STEP_MESSAGE:
            escalation.record_step_message(session, row, delivered=False, error=error, now=now)
        if row.kind == OutboxKind.DELIVERY_FAILURE or (
            row.kind in _ABOUT_FAILURES and not row.recipient_id
        ):
            logger.critical(
                "could not deliver the %s alert of %s (row %s): %s",
                row.kind,
                row.referral_id,
                row.id,
                error,
            )
        elif row.kind == OutboxKind.COPY:
            # The person has the message by their first channel: the EDT channel is told, no
            # one is paged.
            logger.error("could not send the copy %s of %s: %s", row.id, row.referral_id, error)
            target = target_of(session, row)
            raise_alert(
                session,
                self.ctx.settings,
                OutboxKind.DELIVERY_FAILURE,
                row.referral_id,
                now,
                target=target.spec if target else None,
                person_id=row.recipient_id,
                reason=error,
                channel=row.channel or None,
                what=str(row.kind),
            )
        elif row.kind == OutboxKind.STEP_MESSAGE and row.recipient_id:
            # An escalation DM, a breach DM: the step's event and channel post say so too.
            target = target_of(session, row)
            raise_alert(
                session,
                self.ctx.settings,
                OutboxKind.UNREACHABLE,
                row.referral_id,
                now,
                to_on_call=True,
                not_to=[row.recipient_id],
                target_id=row.target_id,
                target=target.spec if target else None,
                person_id=row.recipient_id,
                reason=error,
                channel=",".join(dict.fromkeys([*outbox.unreachable_on(row), row.channel or ""])),
            )
        elif row.kind == OutboxKind.PROMPT or (row.kind in ALERT_ROW_KINDS and row.recipient_id):
            self._alert_delivery_failure(session, row, now, error)
        else:
            # A post in a room (the card, an alert, an escalation post): the EDT channel hears
            # of it; when the EDT channel itself refused it, the on-call holders do.
            logger.error("could not post %s for %s: %s", row.kind, row.referral_id, error)
            target = target_of(session, row)
            in_edt = row.kind == OutboxKind.CARD or (bool(edt) and row.address == edt)
            raise_alert(
                session,
                self.ctx.settings,
                OutboxKind.DELIVERY_FAILURE,
                row.referral_id,
                now,
                to_on_call=in_edt,
                target=target.spec if target else None,
                person_id=row.address or row.message_channel or edt,
                reason=error,
                channel=row.channel or None,
                what=str(row.kind),
            )

    def _alert_delivery_failure(
        self, session: Session, row: OutboxMessage, now: datetime, reason: str
    ) -> None:
        target = target_of(session, row)
        if target is not None and target.state == TargetState.HELD:
            target.state = TargetState.FAILED
        raise_alert(
            session,
            self.ctx.settings,
            OutboxKind.DELIVERY_FAILURE,
            row.referral_id,
            now,
            target=target.spec if target else outbox.load_detail(row).get("role"),
            person_id=row.recipient_id,
            reason=reason,
            channel=",".join(dict.fromkeys([*outbox.unreachable_on(row), row.channel or ""])),
        )
        referral = session.get(Referral, row.referral_id)
        if referral is not None and target is not None:
            outbox.redraw_card(session, referral, now, edt_channel=self.ctx.settings.edt_channel)

    def _try_credentials_alert(
        self, referral_id: str, error: str, now: datetime, channel_name: str
    ) -> None:
        """Best effort: with a revoked token this fails too, but a scope problem may not (and
        the EDT channel in Slack hears of a mail relay refusing us)."""
        room = self.ctx.settings.edt_channel
        if not room:
            return
        last = self._last_credentials_alert.get(channel_name)
        if last is not None and now - last < CREDENTIALS_ALERT_EVERY:
            return
        self._last_credentials_alert[channel_name] = now
        with self.session_factory() as session:
            referral = session.get(Referral, referral_id)
            if referral is None:
                return
            built = build_alert_message(
                AlertKind.SLACK_AUTH,
                referral,
                tz=self.ctx.settings.timezone,
                reason=error,
                channel=channel_name,
            )
        message = Message(
            built["text"], built["blocks"], alert_tag(AlertKind.SLACK_AUTH, referral_id)
        )
        try:
            self.ctx.channels.for_rooms().send(room, message)
        except ChannelError:
            logger.error("could not post the credentials alert either (%s)", error)


def _lost(row_id: int) -> RowResult:
    """Our claim ran out and another dispatcher has the row (its kind is theirs to report)."""
    return RowResult(row_id, "", Outcome.LOST, reason="claim lost")
