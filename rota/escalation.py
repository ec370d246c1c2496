"""Escalation decisions for a prompt nobody has responded to (docs/timing.md): pure, no clock.

From the instant a prompt is sent, counted in the recipient team's working time (wall-clock
time for a shift-only recipient): a reminder at +60 min, an escalation to the rest of the chain
and the team manager at +120 min, a post in the escalation channel at +240 min (an urgent
referral: +15, +30, +60), and a breach at the end of the recipient's own working day in which
the channel step falls. `decide` says which step to perform
now; the caller performs it (STYLE habit 4). Steps whose instant passed while the bot was down
are performed late, one at a time and in order, never skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

Step = Literal["remind", "escalate", "escalate_channel", "breach"]
Action = Literal["remind", "escalate", "escalate_channel", "breach", "wait", "stop"]

REMIND: Step = "remind"
ESCALATE: Step = "escalate"
ESCALATE_CHANNEL: Step = "escalate_channel"
BREACH: Step = "breach"
STEPS: tuple[Step, ...] = (REMIND, ESCALATE, ESCALATE_CHANNEL, BREACH)

# A step performed this long after its instant counts as late in the log (the dispatcher
# normally wakes within seconds; minutes mean it was down or starved).
LATE_AFTER = timedelta(minutes=2)

# The breach is the end of the working day *containing* the channel step. Working periods are
# half-open, so a channel step landing exactly at closing time (17:00) would otherwise be counted
# in the next working day; it is recognised by the day of the instant just before it ending there.
_JUST_BEFORE = timedelta(microseconds=1)


class WorkingClock(Protocol):
    """What escalation needs of a recipient's working time (rota.worktime.WorkingTime)."""

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        """The instant `minutes` of the recipient's working time after `start`."""
        ...

    def end_of_working_day(self, t: datetime) -> datetime:
        """The end of the recipient's working day in which `t` falls (or of the next one)."""
        ...


class StepOffsets(Protocol):
    """The configurable offsets (bot.settings.EscalationPolicy), in working minutes."""

    @property
    def reminder_minutes(self) -> int:
        """Working minutes after the prompt was sent: its recipient is reminded."""
        ...

    @property
    def escalate_minutes(self) -> int:
        """Working minutes after it was sent: the rest of the chain and the team manager hear."""
        ...

    @property
    def channel_minutes(self) -> int:
        """Working minutes after it was sent: the escalation channel hears."""
        ...


@dataclass(frozen=True)
class EscalationState:
    """What is known of one sent prompt: when it went, which steps are done, and why to stop."""

    sent_at: datetime
    done: frozenset[str] = field(default_factory=frozenset)
    responded: bool = False
    referral_closed: bool = False
    target_cancelled: bool = False

    def with_done(self, step: str) -> EscalationState:
        """The same state with one more step done."""
        return EscalationState(
            sent_at=self.sent_at,
            done=self.done | {step},
            responded=self.responded,
            referral_closed=self.referral_closed,
            target_cancelled=self.target_cancelled,
        )


@dataclass(frozen=True)
class EscalationDecision:
    """What to do now: a step (with its instant and lateness), wait until `next_check`, or stop."""

    action: Action
    step: Step | None = None  # the step performed now, or awaited when waiting
    due_at: datetime | None = None  # that step's instant
    next_check: datetime | None = None  # when to look again; None: never
    late: bool = False
    reason: str | None = None  # why it stops

    @property
    def performs(self) -> bool:
        """Whether a step is to be performed now."""
        return self.action in STEPS


def escalation_schedule(
    sent_at: datetime, working_time: WorkingClock, policy: StepOffsets
) -> list[tuple[Step, datetime]]:
    """Every step of a prompt sent at `sent_at`, with the instant it falls due, in order."""
    if sent_at.tzinfo is None:
        raise ValueError("escalation_schedule needs an aware sent_at")
    remind_at = working_time.add_working_minutes(sent_at, policy.reminder_minutes)
    escalate_at = working_time.add_working_minutes(sent_at, policy.escalate_minutes)
    channel_at = working_time.add_working_minutes(sent_at, policy.channel_minutes)
    closing = working_time.end_of_working_day(channel_at - _JUST_BEFORE)
    if closing == channel_at:
        breach_at = channel_at  # the +240 step is the day's last working minute
    else:
        breach_at = max(channel_at, working_time.end_of_working_day(channel_at))
    return [
        (REMIND, remind_at),
        (ESCALATE, escalate_at),
        (ESCALATE_CHANNEL, channel_at),
        (BREACH, breach_at),
    ]


def respond_by(
    sent_at: datetime, working_time: WorkingClock, policy: StepOffsets, *, urgent: bool
) -> datetime:
    """The "respond by" a prompt sent at `sent_at` shows (docs/timing.md): for an urgent
    referral its reminder's instant (+15 working minutes by default), else the end of the
    recipient's own working day."""
    if urgent:
        return working_time.add_working_minutes(sent_at, policy.reminder_minutes)
    return working_time.end_of_working_day(sent_at)


def stop_reason(state: EscalationState) -> str | None:
    """Why escalation must stop for this state, or None while it goes on."""
    if state.responded:
        return "responded"
    if state.referral_closed:
        return "referral_closed"
    if state.target_cancelled:
        return "target_cancelled"
    return None


def decide(
    state: EscalationState,
    *,
    now: datetime,
    working_time: WorkingClock,
    policy: StepOffsets,
) -> EscalationDecision:
    """The step to perform at `now` (the earliest not done whose time has passed), or wait/stop."""
    if now.tzinfo is None:
        raise ValueError("decide needs an aware now")
    reason = stop_reason(state)
    if reason is not None:
        return EscalationDecision("stop", reason=reason)
    pending = [
        (step, at)
        for step, at in escalation_schedule(state.sent_at, working_time, policy)
        if step not in state.done
    ]
    if not pending:
        return EscalationDecision("stop", reason="finished")
    step, due_at = pending[0]
    if due_at > now:
        return EscalationDecision("wait", step, due_at=due_at, next_check=due_at)
    following = pending[1][1] if len(pending) > 1 else None
    return EscalationDecision(
        step, step, due_at=due_at, next_check=following, late=now - due_at > LATE_AFTER
    )


def steps_before(step: str) -> frozenset[str]:
    """The steps that precede `step` (a step's row exists only once the one before is done)."""
    return frozenset(STEPS[: STEPS.index(step)]) if step in STEPS else frozenset()
