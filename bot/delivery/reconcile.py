"""Rows cancelled while a dispatcher held them, whose holder never said whether it sent them.

A close or an answer cancels a row a dispatcher holds in its batch (`outbox._cancel_open`); the
holder then either refuses to send it, or records the send already under way. A holder that
dies (kill -9) after its message reached the channel and before it recorded the send leaves the
row cancelled with its lease running. When that lease ends, a dispatcher's pass looks for the
message in the channel, as a takeover of an abandoned claim does (`send.look_for`): found, the
row is recorded as sent, with its usual event and `cancelled_while_sending` and nothing
following from it (`confirm.record_found`) but the views that show state: the card is redrawn
and the recipient's App Home too (`on_delivered`), as after any send that went out as it was
cancelled; not found, it is settled cancelled for good. A row that cannot be looked for — its
channel cannot be asked what it took (email), or its conversation or person is gone (Slack
answers `channel_not_found`, `user_not_found`, …) — is settled too, and the audit log says
its send's outcome is unknown (`send_outcome_unknown`) rather than leaving the cancellation
to say it was not sent. Either way nobody looks at it again. A channel that cannot be asked
now (Slack down, refusing the token) is asked again after a backoff.

A pass with nothing to settle only reads (`outbox.any_unsettled`, in `db.reading`): it takes
no write lock. (A dispatcher's pass makes that read together with its look for due rows and
calls `settle` only when it found some.) docs/timing.md, "Cancelled in a batch".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import (
    ChannelError,
    CredentialsRefused,
    Sent,
    TransientError,
)
from bot.clock import Clock
from bot.db import reading
from bot.delivery import outbox
from bot.delivery.compose import Delivery, DeliveryContext
from bot.delivery.compose.base import delivery_sent_by
from bot.delivery.confirm import record_found, record_row_event
from bot.delivery.kinds import OutboxKind, Outcome
from bot.delivery.pacing import Pacer
from bot.delivery.results import RowResult
from bot.delivery.send import look_for

logger = logging.getLogger(__name__)

# At most this many such rows are looked for in one pass (each is one history call).
PER_PASS = 20
# Why a row's send cannot be known (`send_outcome_unknown`'s `reason`), besides the error code
# of a conversation or person that is gone.
CANNOT_SEARCH = "cannot_search"  # its channel cannot be asked what it took (email)
NO_SUCH_CHANNEL = "channel_not_configured"  # the bot no longer has the row's channel


class Reconciler:
    """Settles rows cancelled under a claim whose holder's lease ended, one at a time."""

    def __init__(
        self,
        ctx: DeliveryContext,
        session_factory: sessionmaker[Session],
        clock: Clock,
        pacer: Pacer | None = None,
        *,
        on_delivered: Callable[[Delivery], None] | None = None,
        per_pass: int = PER_PASS,
    ) -> None:
        self.ctx = ctx
        self.session_factory = session_factory
        self.clock = clock
        self.pacer = pacer
        # What follows a delivered row outside its transaction (the dispatcher's App Home
        # redraw), as for a row its own dispatcher confirms.
        self.on_delivered = on_delivered
        self.per_pass = per_pass

    def run(self) -> list[RowResult]:
        """Settle up to `per_pass` such rows; what became of each. When there is none, one
        read and no write."""
        with reading(self.session_factory) as session:
            if not outbox.any_unsettled(session, self.clock.now()):
                return []
        return self.settle()

    def settle(self) -> list[RowResult]:
        """Settle up to `per_pass` such rows, claiming each (a write) without looking first
        (`run` looks; a dispatcher's pass looks for these and due rows in one read)."""
        results: list[RowResult] = []
        for _ in range(self.per_pass):
            with self.session_factory.begin() as session:
                row = outbox.claim_unsettled(
                    session,
                    self.clock.now(),
                    instance_id=self.ctx.instance_id,
                    lease=self.ctx.lease,
                )
                if row is None:
                    break
                row_id, kind, delivery = row.id, row.kind, delivery_sent_by(row)
                composed_before = outbox.last_post_attempt_at(row) is not None
            try:
                result = self._settle_one(row_id, kind, delivery, composed_before)
            except Exception:
                # A bug or the database: the row is looked for again when this look's lease
                # ends; the pass goes on to deliver what is due.
                logger.exception("looking for %s %s in its channel failed", kind, row_id)
                continue
            if result is not None:
                results.append(result)
        return results

    def _settle_one(
        self, row_id: int, kind: str, delivery: Delivery | None, composed_before: bool
    ) -> RowResult | None:
        if delivery is None:
            if composed_before:
                # Composed by a version that did not keep what it sent: it cannot be asked.
                logger.error(
                    "%s %s was cancelled under a claim whose holder died; what it sent is "
                    "not recorded, so it cannot be looked for: settled cancelled",
                    kind,
                    row_id,
                )
            return self._settle_unsent(row_id, kind, why="no message composed")
        return self._look(row_id, kind, delivery)

    def _look(self, row_id: int, kind: str, delivery: Delivery) -> RowResult | None:
        try:
            channel = self.ctx.channels.named(delivery.channel)
        except KeyError:
            return self._settle_unknown(row_id, kind, delivery, reason=NO_SUCH_CHANNEL)
        if not channel.searchable:
            return self._settle_unknown(row_id, kind, delivery, reason=CANNOT_SEARCH)
        try:
            found = look_for(channel, delivery, self.pacer)
        except (TransientError, CredentialsRefused) as exc:
            return self._later(row_id, kind, exc)
        except ChannelError as exc:
            # The conversation or the person is gone (or Slack refuses the question): asking
            # again will not tell, so whether it went out stays unknown.
            return self._settle_unknown(row_id, kind, delivery, reason=exc.error)
        if found is None:
            return self._settle_unsent(row_id, kind, why="not found")
        result = self._record(row_id, kind, delivery, found)
        if result is not None and self.on_delivered is not None:
            self.on_delivered(delivery)
        return result

    def _record(self, row_id: int, kind: str, delivery: Delivery, found: Sent) -> RowResult | None:
        with self.session_factory.begin() as session:
            row = outbox.unsettled_held(session, row_id, self.ctx.instance_id)
            if row is None:
                return None  # its holder settled it meanwhile, or another dispatcher looks
            reason = row.last_error
            result = record_found(self.ctx, session, row, delivery, found, self.clock.now())
        logger.warning(
            "%s %s, cancelled (%s) while a dispatcher that then died held it, was sent by that "
            "dispatcher (%s): recorded as sent",
            kind,
            row_id,
            reason,
            found.ts,
        )
        return result

    def _settle_unsent(self, row_id: int, kind: str, *, why: str) -> RowResult | None:
        with self.session_factory.begin() as session:
            row = outbox.unsettled_held(session, row_id, self.ctx.instance_id)
            if row is None:
                return None
            outbox.settle_cancelled(row)
            outbox.note(row, reconciled=why)
            reason = row.last_error
        logger.info("%s %s (cancelled: %s) was not sent (%s): settled", kind, row_id, reason, why)
        return RowResult(row_id, kind, Outcome.CANCELLED, reason=reason)

    def _settle_unknown(
        self, row_id: int, kind: str, delivery: Delivery, *, reason: str
    ) -> RowResult | None:
        """The row's message may have gone out and cannot be looked for: settled cancelled,
        once, the log saying the send's outcome is unknown (not that it was not sent)."""
        now = self.clock.now()
        tz = self.ctx.settings.timezone
        with self.session_factory.begin() as session:
            row = outbox.unsettled_held(session, row_id, self.ctx.instance_id)
            if row is None:
                return None
            outbox.settle_cancelled(row)
            outbox.note(row, reconciled=f"outcome unknown: {reason}")
            cancelled_as = row.last_error or "cancelled"
            detail: dict[str, Any] = {
                "kind": str(kind),
                "row_id": row_id,
                "reason": reason,
                "channel": delivery.channel,
                "address": delivery.address,
                "cancelled_while_sending": cancelled_as,
            }
            if kind == OutboxKind.PROMPT:
                detail["prompt_id"] = row_id
            if delivery.earlier_attempt_at is not None:
                detail["attempt_at"] = delivery.earlier_attempt_at.astimezone(tz).isoformat()
            record_row_event(session, "send_outcome_unknown", delivery, at=now, detail=detail)
        logger.warning(
            "%s %s, cancelled (%s) while a dispatcher that then died held it, cannot be looked "
            "for in %s (%s): it may have been sent; settled, its outcome logged as unknown",
            kind,
            row_id,
            cancelled_as,
            delivery.channel,
            reason,
        )
        return RowResult(row_id, kind, Outcome.CANCELLED, reason=cancelled_as)

    def _later(self, row_id: int, kind: str, exc: ChannelError) -> RowResult | None:
        """The channel cannot be asked now: the row is looked for again after a backoff."""
        now = self.clock.now()
        with self.session_factory.begin() as session:
            row = outbox.unsettled_held(session, row_id, self.ctx.instance_id)
            if row is None:
                return None
            tries = int(outbox.dispatch_state(row).get("reconcile_attempts") or 0) + 1
            row.claimed_until = now + outbox.backoff(tries)
            outbox.note(row, reconcile_attempts=tries)
            retry_at = row.claimed_until
        logger.warning(
            "could not look for %s %s in its channel (%s): looking again at %s",
            kind,
            row_id,
            exc.error,
            retry_at.isoformat(),
        )
        return RowResult(row_id, kind, Outcome.RETRYING, reason=exc.error, next_due_at=retry_at)
