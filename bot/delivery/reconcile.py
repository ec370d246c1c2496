"""Rows cancelled while a dispatcher held them, whose holder never said whether it sent them.

A close or an answer cancels a row a dispatcher holds in its batch (`outbox._cancel_open`); the
holder then either refuses to send it, or records the send already under way. A holder that
dies (kill -9) after its message reached the channel and before it recorded the send leaves the
row cancelled with its lease running. When that lease ends, a dispatcher's pass looks for the
message in the channel, as a takeover of an abandoned claim does (`send.look_for`): found, the
row is recorded as sent, with its usual event and `cancelled_while_sending` and nothing
following from it (`confirm.record_found`); not found, it is settled cancelled for good. Either
way nobody looks at it again. A channel that cannot be asked now (Slack down, refusing the
token) is asked again after a backoff. docs/timing.md, "Cancelled in a batch".
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import (
    ChannelError,
    CredentialsRefused,
    Sent,
    TransientError,
)
from bot.clock import Clock
from bot.delivery import outbox
from bot.delivery.compose import Delivery, DeliveryContext
from bot.delivery.compose.base import delivery_sent_by
from bot.delivery.confirm import record_found
from bot.delivery.kinds import Outcome
from bot.delivery.pacing import Pacer
from bot.delivery.results import RowResult
from bot.delivery.send import look_for

logger = logging.getLogger(__name__)

# At most this many such rows are looked for in one pass (each is one history call).
PER_PASS = 20


class Reconciler:
    """Settles rows cancelled under a claim whose holder's lease ended, one at a time."""

    def __init__(
        self,
        ctx: DeliveryContext,
        session_factory: sessionmaker[Session],
        clock: Clock,
        pacer: Pacer | None = None,
        *,
        per_pass: int = PER_PASS,
    ) -> None:
        self.ctx = ctx
        self.session_factory = session_factory
        self.clock = clock
        self.pacer = pacer
        self.per_pass = per_pass

    def run(self) -> list[RowResult]:
        """Settle up to `per_pass` such rows; what became of each."""
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
            found = look_for(channel, delivery, self.pacer)
        except (TransientError, CredentialsRefused) as exc:
            return self._later(row_id, kind, exc)
        except (ChannelError, KeyError) as exc:
            # The conversation or the channel is gone: nothing of the row can be found there.
            logger.error("could not look for %s %s in its channel (%r)", kind, row_id, exc)
            return self._settle_unsent(row_id, kind, why=f"could not look: {exc}")
        if found is None:
            return self._settle_unsent(row_id, kind, why="not found")
        return self._record(row_id, kind, delivery, found)

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
