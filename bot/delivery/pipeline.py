"""One claimed row through its three steps, the one path for every kind of message.

1. *compose* (short transaction): what the row means now (`compose`); a person only their
   channel can find is looked up outside the transaction, stored, and the row composed again;
2. *find or send* (no transaction): `send.find_or_send`, which checks and renews the claim in
   one statement just before the send, and sends nothing when it is lost;
3. *confirm* (short transaction): `confirm.confirm`; when the claim turns out lost after all
   and another dispatcher sent the row too, our copy is taken back
   (`confirm.take_back_late_copy`).

A dispatcher's batch goes through step 1 in one transaction (`compose_batch`), each row through
step 2, then step 3 for every row it posted in one transaction: a prompt costs a few SQL
statements, not a few dozen (docs/benchmarks.md). A row whose compose or confirm cannot
share the batch's transaction goes through its step alone.

A channel failure at any step is settled by `failures.Failures`. A dispatcher that dies between
2 and 3 leaves a claimed row whose lease expires; whoever claims it next looks for the message
before sending, so it is neither lost nor sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import (
    CredentialsRefused,
    RecipientUnreachable,
    RequestRefused,
    TransientError,
)
from bot.clock import Clock
from bot.delivery import outbox
from bot.delivery.compose import (
    Composed,
    Delivery,
    DeliveryContext,
    NeedsAddress,
    Settled,
    compose,
    compose_batch,
)
from bot.delivery.confirm import Posted, confirm, take_back_late_copy
from bot.delivery.failures import Failures
from bot.delivery.kinds import Outcome
from bot.delivery.pacing import Pacer
from bot.delivery.results import RowResult
from bot.delivery.send import ClaimLost, find_or_send
from rota.models import Person

logger = logging.getLogger(__name__)

LOOKUP_ROUNDS = 2  # compose, look the person up, compose again
# A row is handed from channel to channel, and a prompt from person to person along its chain,
# at most this often in one pass.
MAX_HANDS = 16


@dataclass
class _Attempt:
    """How far one attempt at a row got: the channel in use, and whether it is a person's."""

    channel: str | None = None
    person_channel: str | None = None
    sending: bool = False


class CredentialsHeld(Exception):
    """Raised to stop a pass: the channel refuses the bot, so every row would fail alike."""

    def __init__(self, result: RowResult) -> None:
        super().__init__(result.reason)
        self.result = result


class RowPipeline:
    """Delivers one claimed row at a time."""

    def __init__(
        self,
        ctx: DeliveryContext,
        session_factory: sessionmaker[Session],
        clock: Clock,
        *,
        on_delivered: Callable[[Delivery], None] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.ctx = ctx
        self.pacer = pacer
        self.session_factory = session_factory
        self.clock = clock
        self.failures = Failures(ctx, session_factory, clock)
        self.on_delivered = on_delivered

    def compose_batch(self, row_ids: Sequence[int]) -> dict[int, Composed]:
        """Step 1 for a whole claimed batch, in one transaction; {} when that failed (each row
        is then composed alone, by `deliver`)."""
        try:
            with self.session_factory.begin() as session:
                return compose_batch(self.ctx, session, row_ids, self.clock.now())
        except Exception:
            logger.exception("composing a batch of %d rows failed; each alone", len(row_ids))
            return {}

    def process(self, row_id: int) -> RowResult | None:
        """Steps 1 to 3 for one claimed row; None when an internal error left it to its lease."""
        outcome = self.deliver(row_id)
        if isinstance(outcome, Posted):
            return self.confirm([outcome])[0]
        return outcome

    def deliver(self, row_id: int, composed: Composed | None = None) -> RowResult | Posted | None:
        """Steps 1 and 2 for one claimed row (step 1 already done when `composed` is given):
        Posted when its message is in the channel, its step 3 still owed; None when an
        internal error left it to its lease.

        A channel that cannot reach the row's person hands the row to their next channel
        (email for someone Slack does not know), in the same pass; a prompt whose recipient no
        channel reaches goes on to the next in its chain at work, in the same pass too
        (`Failures.pass_over`). Raises CredentialsHeld
        (after releasing the row) when the rooms' channel refuses the bot.
        """
        for _ in range(MAX_HANDS):
            attempt = _Attempt()
            try:
                return self._deliver(row_id, attempt, composed)
            except RecipientUnreachable as exc:
                if attempt.person_channel is not None and self._hand_on(row_id, attempt, exc):
                    continue
                if self.failures.pass_over(row_id, exc):
                    continue  # the next in the prompt's chain, at once
                return self.failures.permanent(row_id, exc)
            except TransientError as exc:
                return self.failures.transient(row_id, exc)
            except CredentialsRefused as exc:
                result = self.failures.credentials(row_id, exc, channel=attempt.channel)
                if attempt.channel in (None, self.ctx.channels.for_rooms().name):
                    raise CredentialsHeld(result) from exc
                # Another channel refuses us: its rows wait; Slack's go on.
                return result
            except RequestRefused as exc:
                return self.failures.permanent(row_id, exc)
            except Exception:
                logger.exception("dispatching row %s failed", row_id)
                # It may already be sent once the channel was called: doubt it.
                return self.failures.internal(row_id, may_have_posted=attempt.sending)
            finally:
                composed = None  # what the batch composed holds for the first attempt only
        return self.failures.permanent(
            row_id,
            RecipientUnreachable("no channel left", method="resolve", error="no_channel"),
        )

    def confirm(self, posted: Sequence[Posted]) -> list[RowResult | None]:
        """Step 3 for the rows a batch posted, in one transaction; when that fails, each row
        alone (one that fails alone too is left to its lease, then looked for in its channel)."""
        if not posted:
            return []
        try:
            results: list[RowResult | None] = list(confirm(self.ctx, self.session_factory, posted))
        except Exception:
            logger.exception("confirming %d rows together failed; each alone", len(posted))
            results = [self._confirm_alone(one) for one in posted]
        for one, result in zip(posted, results, strict=True):
            if result is None:
                continue
            if result.outcome is Outcome.LOST and not one.found:
                # Sent, then found no longer ours: if its new holder sent it too, ours goes.
                take_back_late_copy(
                    self.ctx,
                    self.session_factory,
                    one.delivery,
                    one.sent,
                    self.clock.now(),
                    self.pacer,
                )
            elif result.outcome is Outcome.DELIVERED and self.on_delivered is not None:
                self.on_delivered(one.delivery)
        return results

    def _confirm_alone(self, posted: Posted) -> RowResult | None:
        try:
            return confirm(self.ctx, self.session_factory, [posted])[0]
        except Exception:
            logger.exception("confirming row %s failed", posted.delivery.row_id)
            return self.failures.internal(posted.delivery.row_id, may_have_posted=True)

    def _deliver(
        self, row_id: int, attempt: _Attempt, composed: Composed | None
    ) -> RowResult | Posted:
        composed = self._compose(row_id, attempt, composed)
        if isinstance(composed, Settled):
            return composed.result(row_id)
        if isinstance(composed, NeedsAddress):
            raise RecipientUnreachable(
                f"no address for {composed.person_id}", method="resolve", error="no_address"
            )
        attempt.channel = composed.channel
        attempt.person_channel = composed.channel if composed.person is not None else None
        attempt.sending = True
        channel = self.ctx.channels.named(composed.channel)
        try:
            sent, found = find_or_send(
                channel,
                composed,
                self.pacer,
                hold_claim=lambda conn: self._hold_claim(row_id, conn),
            )
        except ClaimLost:
            return self._refused(row_id, composed.kind)
        return Posted(composed, sent, found, self.clock.now())

    def _refused(self, row_id: int, kind: str) -> RowResult:
        """The check before the send refused the row: it was cancelled in our batch (nothing
        sent, as its cancellation says), or another dispatcher holds it now."""
        with self.session_factory.begin() as session:
            cancelled = outbox.cancelled_under_claim(session, row_id, self.ctx.instance_id)
            if cancelled is None:
                logger.warning("lost the claim on %s %s before sending it: not sent", kind, row_id)
                return RowResult(row_id, kind, Outcome.LOST, reason="claim lost")
            # Refused before the send (the channel searched first if an earlier attempt may
            # have sent it): nobody needs to look for it.
            outbox.settle_cancelled(cancelled)
            logger.info(
                "%s %s was cancelled in our batch before its send (%s): not sent",
                kind,
                row_id,
                cancelled.last_error,
            )
            return RowResult(row_id, kind, Outcome.CANCELLED, reason=cancelled.last_error)

    def _hold_claim(self, row_id: int, conn: Connection | None = None) -> bool:
        """Renew our claim on the row just before its send, in `conn`'s transaction (the one
        taking the send's token) or in one of its own; False when it is no longer ours."""
        if conn is None:
            with self.session_factory.begin() as session:
                return self._hold_claim(row_id, session.connection())
        return outbox.hold_claim(
            conn,
            row_id,
            instance_id=self.ctx.instance_id,
            now=self.clock.now(),
            lease=self.ctx.lease,
        )

    def _compose(self, row_id: int, attempt: _Attempt, first: Composed | None) -> Composed:
        if isinstance(first, NeedsAddress):
            first = None  # an earlier row of the batch may have found the address since
        composed: Composed | None = None
        for _ in range(LOOKUP_ROUNDS):
            if first is not None:
                composed, first = first, None
            else:
                with self.session_factory.begin() as session:
                    composed = compose(self.ctx, session, row_id, self.clock.now())
            if not isinstance(composed, NeedsAddress):
                break
            attempt.channel = attempt.person_channel = composed.channel
            self._look_up(composed)
        assert composed is not None
        return composed

    def _hand_on(self, row_id: int, attempt: _Attempt, exc: RecipientUnreachable) -> bool:
        """The person's channel cannot reach them: note it on the row, for their next one."""
        assert attempt.person_channel is not None
        with self.session_factory.begin() as session:
            row = outbox.hand_to_next_channel(
                session,
                row_id,
                instance_id=self.ctx.instance_id,
                channel=attempt.person_channel,
                error=exc.error,
            )
            if row is None:
                return False
            logger.warning(
                "%s cannot reach %s for %s %s (%s): trying their next channel",
                attempt.person_channel,
                row.recipient_id,
                row.kind,
                row_id,
                exc.error,
            )
        return True

    def _look_up(self, needed: NeedsAddress) -> None:
        """Ask the person's channel for their address (no transaction open), and store it."""
        channel = self.ctx.channels.named(needed.channel)
        address = channel.look_up(needed.contact)
        with self.session_factory.begin() as session:
            person = session.get(Person, needed.person_id)
            if person is not None:
                channel.remember(person, address)
