"""Need to know: which referrals a person may read (docs/reference/slack.md, App Home and log).

- `oversight` (EDT and MASH managers, safeguarding leads) reads every referral;
- `manager` reads the referrals that concern the teams they manage: their own team and any team
  naming them as `manager`. A referral concerns a team when one of its targets is that team, a
  person of it, or a role whose prompt went (or is planned) to a person of it;
- a referrer reads the referrals they made.

A school head sees the referrals that concern the school, not the county's health and police
referrals. These functions take a session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, exists, literal, or_, select
from sqlalchemy.orm import Session

from bot.delivery.kinds import OutboxKind
from bot.models import OutboxMessage, Referral, Target
from rota.models import Person, Team

OVERSIGHT = "oversight"
MANAGER = "manager"
REFERRER = "referrer"


@dataclass(frozen=True)
class Scope:
    """The referrals one person may read: all of them, or those of `teams` and their own."""

    person_id: str
    everything: bool
    teams: frozenset[str] = frozenset()

    def referral_ids(self) -> Select:
        """A select of the referral IDs in scope (every referral when `everything`)."""
        if self.everything:
            return select(Referral.referral_id)
        return select(Referral.referral_id).where(
            or_(Referral.referrer_id == self.person_id, Referral.referral_id.in_(self._concerned()))
        )

    def _concerned(self) -> Select:
        teams = sorted(self.teams)
        members = select(Person.person_id).where(Person.team_id.in_(teams))
        person_specs = select(literal("person:") + Person.person_id).where(
            Person.team_id.in_(teams)
        )
        prompted_to_member = exists(
            select(OutboxMessage.id).where(
                OutboxMessage.target_id == Target.id,
                OutboxMessage.kind == OutboxKind.PROMPT,
                OutboxMessage.recipient_id.in_(members),
            )
        )
        return select(Target.referral_id).where(
            or_(
                Target.spec.in_([f"team:{t}" for t in teams]),
                Target.spec.in_(person_specs),
                Target.planned_recipient.in_(members),
                prompted_to_member,
            )
        )

    def allows(self, session: Session, referral_id: str) -> bool:
        """Whether this referral is in scope."""
        if self.everything:
            return True
        found = session.scalar(
            self.referral_ids().where(Referral.referral_id == referral_id).limit(1)
        )
        return found is not None


def managed_teams(session: Session, person: Person) -> frozenset[str]:
    """The teams a manager manages: their own and any naming them as manager."""
    named = session.scalars(select(Team.team_id).where(Team.manager_id == person.person_id))
    return frozenset({person.team_id, *named})


def reads_the_log(person: Person) -> bool:
    """Whether a person may read the escalation log at all (of some referrals)."""
    return person.has_permission(MANAGER) or person.has_permission(OVERSIGHT)


def scope_of(session: Session, person: Person) -> Scope:
    """The referrals `person` may read."""
    if person.has_permission(OVERSIGHT):
        return Scope(person.person_id, everything=True)
    teams = managed_teams(session, person) if person.has_permission(MANAGER) else frozenset()
    return Scope(person.person_id, everything=False, teams=teams)
