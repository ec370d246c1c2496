"""What a dispatch pass did: one `RowResult` per row it processed, and the totals."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bot.delivery.kinds import ALERT_ROW_KINDS, OutboxKind, Outcome


@dataclass(frozen=True)
class RowResult:
    """What one claimed row came to."""

    row_id: int
    kind: str
    outcome: Outcome
    late: bool = False  # delivered later than it was due (a prompt), or performed late (a step)
    found: bool = False  # found already in the channel, not sent again
    unreachable: bool = False  # the channel could not be reached at all
    step: str | None = None  # an escalation step's
    reason: str | None = None  # why it was cancelled, rescheduled or failed
    next_due_at: datetime | None = None  # a rescheduled row's new time; a step's next step


@dataclass
class DispatchStats:
    """What one pass (or several, added up) did."""

    claimed: int = 0
    results: list[RowResult] = field(default_factory=list)

    def record(self, result: RowResult) -> None:
        """Count one processed row."""
        self.results.append(result)

    def add(self, other: DispatchStats) -> None:
        """Add another pass's figures to these."""
        self.claimed += other.claimed
        self.results.extend(other.results)

    def count(self, outcome: Outcome, kinds: Iterable[str] | None = None) -> int:
        """How many rows came to `outcome` (of these kinds)."""
        wanted = None if kinds is None else set(kinds)
        return sum(
            1 for r in self.results if r.outcome is outcome and (wanted is None or r.kind in wanted)
        )

    @property
    def sent(self) -> int:
        """Prompts delivered."""
        return self.count(Outcome.DELIVERED, {OutboxKind.PROMPT})

    @property
    def alerts(self) -> int:
        """On-call, long-gap, unroutable and delivery-failure alerts delivered."""
        return self.count(Outcome.DELIVERED, ALERT_ROW_KINDS)

    @property
    def cards(self) -> int:
        """Card posts and updates."""
        return self.count(Outcome.DELIVERED, {OutboxKind.CARD})

    @property
    def escalations(self) -> int:
        """Escalation steps performed (reminders, escalations, channel posts, breaches)."""
        return self.count(Outcome.PERFORMED)

    @property
    def late(self) -> int:
        """Rows delivered late."""
        return sum(1 for r in self.results if r.late and r.outcome is Outcome.DELIVERED)

    @property
    def found_in_history(self) -> int:
        """Messages found already sent instead of sent again."""
        return sum(1 for r in self.results if r.found)

    @property
    def unreachable(self) -> int:
        """Rows whose channel could not be reached at all."""
        return sum(1 for r in self.results if r.unreachable)

    @property
    def retrying(self) -> int:
        """Rows released to be tried again after a backoff."""
        return self.count(Outcome.RETRYING)

    @property
    def failed(self) -> int:
        """Rows given up on after a permanent error."""
        return self.count(Outcome.FAILED)

    @property
    def rescheduled(self) -> int:
        """Rows due later now (the rota changed)."""
        return self.count(Outcome.RESCHEDULED)

    @property
    def cancelled(self) -> int:
        """Rows no longer owed."""
        return self.count(Outcome.CANCELLED)

    @property
    def deferred(self) -> int:
        """Rows handed back unchanged, to be looked at again soon."""
        return self.count(Outcome.DEFERRED)

    @property
    def lost_claims(self) -> int:
        """Rows whose claim ran out and that another dispatcher has."""
        return self.count(Outcome.LOST)

    def fields(self) -> dict[str, int]:
        """The pass's counts as structured log fields (docs/operations.md)."""
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "late": self.late,
            "alerts": self.alerts,
            "cards": self.cards,
            "escalation_steps": self.escalations,
            "retrying": self.retrying,
            "failed": self.failed,
            "rescheduled": self.rescheduled,
            "cancelled": self.cancelled,
        }

    def summary(self) -> str:
        """One line for `handover dispatch --once`."""
        return (
            f"dispatch: {self.sent} prompts sent ({self.late} late), {self.alerts} alerts, "
            f"{self.cards} card updates, {self.escalations} escalation steps, "
            f"{self.found_in_history} found already in Slack, "
            f"{self.retrying} to retry, {self.failed} failed, {self.rescheduled} rescheduled, "
            f"{self.cancelled} cancelled"
        )
