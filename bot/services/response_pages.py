"""What the email response pages need beyond the response service: who a link is for, the
colleagues they may redirect to, who answered already, and the log of refused links.

Answers themselves are recorded by `bot.services.responses` (the same service and the same
authorisation as Slack's buttons). Functions here take a session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import ContactFollowup, OutboxMessage, Target
from bot.response_links import LinkClaim, Refusal
from bot.services import audit
from bot.services.directory import SEARCH_LIMIT, search_people
from rota.models import Person, Team
from rota.store import RotaStore

VIA_EMAIL_LINK = "email link"


@dataclass(frozen=True)
class Someone:
    """A person as a page names them: 'Sam Bell, practice manager, Riverside Medical Practice'."""

    person_id: str
    name: str
    role: str
    team: str

    @property
    def label(self) -> str:
        """Their name, role and team, those given, joined by commas."""
        return ", ".join(part for part in (self.name, self.role, self.team) if part)


def someone(session: Session, person_id: str | None) -> Someone | None:
    """A person of the rota (active or not), as pages name them."""
    if not person_id:
        return None
    person = session.get(Person, person_id)
    if person is None:
        return Someone(person_id, person_id, "", "")
    team = session.get(Team, person.team_id)
    return Someone(person_id, person.name, person.role, team.name if team else "")


def colleagues(
    session: Session, person_id: str, query: str, *, limit: int = SEARCH_LIMIT
) -> list[tuple[str, str]]:
    """Whom a person may redirect to: those whose id or name contains `query`, or without one,
    their own team; never themselves. As (person_id, label)."""
    if query:
        found = search_people(session, query, limit + 1)
    else:
        person = session.get(Person, person_id)
        team = person.team_id if person is not None else None
        rows = session.execute(
            select(Person.person_id, Person.name, Person.role, Team.name)
            .join(Team, Team.team_id == Person.team_id)
            .where(Person.active.is_(True), Person.team_id == team)
            .order_by(Person.name)
            .limit(limit + 1)
        ).all()
        found = [(pid, f"{name} — {role}, {team_name}") for pid, name, role, team_name in rows]
    return [(pid, label) for pid, label in found if pid != person_id][:limit]


def log_refused_link(
    session: Session,
    reason: Refusal | str,
    *,
    now: datetime,
    claim: LinkClaim | None = None,
    **detail: Any,
) -> None:
    """`response_refused` for a link or form refused before the response service is asked:
    forged, altered, expired, a form without its CSRF token, an answer already given (of a
    prompt or of a contact check)."""
    referral_id = target = recipient = None
    about: dict[str, Any] = {}
    if claim is not None and claim.is_contact:
        about = {"response": claim.answer, "followup_id": claim.prompt_id}
        followup = session.get(ContactFollowup, claim.prompt_id)
        if followup is not None:
            referral_id, recipient = followup.referral_id, followup.professional_id
            found = session.get(Target, followup.target_id) if followup.target_id else None
            target = found.spec if found is not None else None
    elif claim is not None:
        about = {"response": claim.answer, "prompt_id": claim.prompt_id}
        prompt = session.get(OutboxMessage, claim.prompt_id)
        if prompt is not None:
            referral_id, recipient = prompt.referral_id, prompt.recipient_id
            found = session.get(Target, prompt.target_id) if prompt.target_id else None
            target = found.spec if found is not None else None
    audit.record(
        session,
        "response_refused",
        at=now,
        referral_id=referral_id,
        actor=claim.person_id if claim is not None else None,
        recipient=recipient,
        target=target,
        detail={
            "via": VIA_EMAIL_LINK,
            "reason": reason,
            **about,
            **detail,
        },
        rota_version=RotaStore(session).current_rota_version(),
    )
