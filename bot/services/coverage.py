"""Strategy-discussion coverage: the one rule, and the one way it is read from the database.

A strategy discussion needs at least local-authority social care, police and health
(docs/coverage.md). For each referral and each of those agency types the coverage is one of:

- `covered`: a target of that agency type answered `has_information` or `not_known` (an
  acknowledgement or a redirect only says the question was seen or handed on). For social care,
  a referral made by a person of a `social_care` team is covered by its referrer: the EDT *is*
  local-authority social care.
- `pending`: asked, and no such answer yet.
- `missed`: asked, and every target of that type ended (breached, unroutable, its prompt
  undeliverable, cancelled by the close, or handed on by a redirect) without such an answer.
- `not_asked`: no target of that agency type.

A target's agency type is its team's (a role's is the team of the person it was sent, or is
planned, to). `agency_coverage` and `referral_coverage` are pure: App Home, `/handover log`,
`GET /api/referrals/{id}`, `handover report` and the demo all reach them, from the live tables
(`coverage_for_referrals`) or from the audit log (bot.services.reports), so the views agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.delivery.kinds import OutboxKind, ResponseKind, TargetState
from bot.models import AuditEvent, OutboxMessage, Referral, Response, Target
from bot.services.agencies import AgencyResolver
from rota.store import RotaStore

STRATEGY_AGENCIES = ("social_care", "police", "health")
AGENCY_LABELS = {"social_care": "Social care", "police": "Police", "health": "Health"}
REFERRER_AGENCY = "social_care"  # the agency a referrer of its own teams covers

# The answers that share what an agency knows: they, and only they, cover.
SHARING_ANSWERS = frozenset({ResponseKind.HAS_INFORMATION, ResponseKind.NOT_KNOWN})
# Target states in which a target will never be answered.
ENDED_STATES = frozenset(
    {
        TargetState.UNROUTABLE,
        TargetState.FAILED,
        TargetState.CANCELLED,
        TargetState.REDIRECTED,
    }
)
# The log's events that end a target without an answer (bot.services.reports reads them).
ENDING_EVENTS = frozenset({"breach", "unroutable", "prompt_cancelled", "redirected"})

_CHUNK = 500


class CoverageState(StrEnum):
    """One agency type's coverage of one referral."""

    COVERED = "covered"
    PENDING = "pending"
    MISSED = "missed"
    NOT_ASKED = "not_asked"


COVERAGE_WORDS = {
    CoverageState.COVERED: "covered",
    CoverageState.PENDING: "pending",
    CoverageState.MISSED: "missed",
    CoverageState.NOT_ASKED: "not asked",
}

# The rule in plain words, as the report and the docs state it.
COVERAGE_RULE = (
    "An agency is covered when one of its people answered 'I hold information' or 'not known' "
    "(social care is also covered when the referrer works in a social-care team); pending "
    "while it was asked and has not answered (an acknowledgement or a redirect alone is "
    "pending); missed when everyone of it asked ended breached, unroutable or cancelled "
    "without an answer; not asked when the referral named nobody of it."
)


class TargetOutcome(StrEnum):
    """Where one target stands, for coverage."""

    ANSWERED = "answered"  # has_information or not_known
    OPEN = "open"  # asked (or about to be), no such answer yet
    ENDED = "ended"  # will not be answered: breached, unroutable, failed, cancelled, handed on


def target_outcome(state: str, *, answered: bool, breached: bool) -> TargetOutcome:
    """A target's outcome from its state, whether it gave a sharing answer, and whether it
    breached (a breach leaves the state as it was)."""
    if answered or state in SHARING_ANSWERS:
        return TargetOutcome.ANSWERED
    if breached or state in ENDED_STATES:
        return TargetOutcome.ENDED
    return TargetOutcome.OPEN


def agency_coverage(outcomes: Iterable[TargetOutcome]) -> CoverageState:
    """The coverage of one agency type from the outcomes of its targets."""
    seen = set(outcomes)
    if TargetOutcome.ANSWERED in seen:
        return CoverageState.COVERED
    if not seen:
        return CoverageState.NOT_ASKED
    if seen == {TargetOutcome.ENDED}:
        return CoverageState.MISSED
    return CoverageState.PENDING


@dataclass(frozen=True)
class Coverage:
    """The strategy-discussion minimum of one referral: a state by agency type."""

    states: dict[str, CoverageState]

    @property
    def complete(self) -> bool:
        """Whether social care, police and health are all covered."""
        return all(self.states[a] == CoverageState.COVERED for a in STRATEGY_AGENCIES)

    @property
    def gaps(self) -> list[str]:
        """The agency types missed or not asked."""
        return [
            a
            for a in STRATEGY_AGENCIES
            if self.states[a] in (CoverageState.MISSED, CoverageState.NOT_ASKED)
        ]

    def as_json(self) -> dict[str, str]:
        """As `GET /api/referrals/{id}` shows it."""
        return {a: str(self.states[a]) for a in STRATEGY_AGENCIES}


def referral_coverage(
    entries: Iterable[tuple[str | None, TargetOutcome]], *, referrer_agency: str | None
) -> Coverage:
    """A referral's coverage from (agency type, outcome) of each target and the agency type of
    its referrer's team."""
    by_agency: dict[str, list[TargetOutcome]] = {a: [] for a in STRATEGY_AGENCIES}
    for agency, outcome in entries:
        if agency in by_agency:
            by_agency[agency].append(outcome)
    if referrer_agency == REFERRER_AGENCY:
        by_agency[REFERRER_AGENCY].append(TargetOutcome.ANSWERED)
    return Coverage({a: agency_coverage(o) for a, o in by_agency.items()})


# ----- read from the live tables -----------------------------------------------------------------


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _latest_prompt_recipients(session: Session, target_ids: Sequence[int]) -> dict[int, str]:
    """The recipient of each target's most recent prompt (kind `prompt`) with one."""
    found: dict[int, str] = {}
    for chunk in _chunks(target_ids):
        rows = session.execute(
            select(OutboxMessage.target_id, OutboxMessage.recipient_id)
            .where(OutboxMessage.target_id.in_(chunk))
            .where(OutboxMessage.kind == OutboxKind.PROMPT)
            .where(OutboxMessage.recipient_id.is_not(None))
            .order_by(OutboxMessage.id)
        ).all()
        for target_id, recipient_id in rows:
            found[target_id] = recipient_id
    return found


def coverage_for_referrals(
    session: Session, referral_ids: Sequence[str], tz: ZoneInfo
) -> dict[str, Coverage]:
    """The live coverage of each referral, by the rule above."""
    ids = list(dict.fromkeys(referral_ids))
    targets: list[Target] = []
    referrers: dict[str, str] = {}
    breached: set[tuple[str, str]] = set()
    for chunk in _chunks(ids):
        targets.extend(session.scalars(select(Target).where(Target.referral_id.in_(chunk))))
        referrers.update(
            session.execute(
                select(Referral.referral_id, Referral.referrer_id).where(
                    Referral.referral_id.in_(chunk)
                )
            ).all()
        )
        breached.update(
            session.execute(
                select(AuditEvent.referral_id, AuditEvent.target)
                .where(AuditEvent.referral_id.in_(chunk))
                .where(AuditEvent.event == "breach")
            ).all()
        )
    target_ids = [t.id for t in targets]
    answered: set[int] = set()
    for chunk in _chunks(target_ids):
        answered.update(
            session.scalars(
                select(Response.target_id)
                .where(Response.target_id.in_(chunk))
                .where(Response.kind.in_(sorted(SHARING_ANSWERS)))
            )
        )
    recipients = _latest_prompt_recipients(session, target_ids)
    store = RotaStore(session)
    resolver = AgencyResolver(store, tz)

    def recipient_of(t: Target) -> str | None:
        return recipients.get(t.id) or t.planned_recipient

    resolver.preload(
        (t.spec for t in targets),
        [recipient_of(t) for t in targets] + list(referrers.values()),
    )
    entries: dict[str, list[tuple[str | None, TargetOutcome]]] = {r: [] for r in ids}
    for t in targets:
        outcome = target_outcome(
            t.state, answered=t.id in answered, breached=(t.referral_id, t.spec) in breached
        )
        entries[t.referral_id].append((resolver.agency_type(t.spec, recipient_of(t)), outcome))
    return {
        r: referral_coverage(
            found,
            referrer_agency=resolver.agency_type(f"person:{referrers[r]}", None)
            if r in referrers
            else None,
        )
        for r, found in entries.items()
    }
