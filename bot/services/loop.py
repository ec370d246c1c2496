"""Closing the loop: what a partner offers reaches the social worker (docs/closing-the-loop.md).

When a professional answers "I hold information" (a time by which, and a method by which, they
will contact the social worker), `record_offer` keeps the promise (a ContactFollowup) and owes, as
outbox rows like every other message:

- at once, a notice to the referrer (DM) and to the referral's daytime owner: the first at work
  in the chain of `team:HANDOVER_OWNER_TEAM` (its duty holder, its manager, its channel), or at
  the start of its next working period (the row is composed then; bot.delivery.compose.loop);
- at the promised time +30 min, the same people are asked whether the contact happened
  (`handover_contact_made` / `handover_contact_missed`);
- at the end of that working day (the owner team's; the professional's without one), a look:
  no answer by then is a missed contact.

A missed contact (clicked, or no answer) sends a DM to the professional and their team manager.
`record_contact` records a click once (a compare-and-set on the promise's state), by the
referrer, a person of the owner team, or someone with `oversight`; a clicker is known by
(workspace, user), as for every other click (docs/partner-workspaces.md).

These functions take a session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import update
from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.kinds import ACTOR, OutboxKind
from bot.models import ContactFollowup, ContactState, Referral, Response, Target
from bot.services import audit
from bot.services.directory import person_for_slack_user
from bot.settings import Settings
from rota.models import Person, Team
from rota.store import RotaStore
from rota.worktime import working_time_for

CHECK_AFTER = timedelta(minutes=30)  # the promised time, and this long to make the call
OVERSIGHT = "oversight"
REFERRER = "referrer"  # whom a loop row is for: the referrer, the owner, …
OWNER = "owner"
PROFESSIONAL = "professional"
MANAGER = "manager"

ContactStatus = Literal["recorded", "already", "refused", "not_found"]


@dataclass(frozen=True)
class Offered:
    """Who offered information, as a notice names them."""

    person_id: str
    name: str
    role: str
    team: str
    slack_user_id: str | None
    phone: str | None


def offered_by(session: Session, person_id: str) -> Offered:
    """The professional a notice names (only their id when they left the rota)."""
    person = session.get(Person, person_id)
    if person is None:
        return Offered(person_id, person_id, "", "", None, None)
    team = session.get(Team, person.team_id)
    return Offered(
        person_id=person.person_id,
        name=person.name,
        role=person.role,
        team=team.name if team is not None else person.team_id,
        slack_user_id=person.slack_user_id,
        phone=person.phone,
    )


def end_of_working_day(
    session: Session, followup: ContactFollowup, at: datetime, settings: Settings
) -> datetime:
    """The end of the working period `at` falls in (or the next one): the owner team's, else
    the professional's."""
    store = RotaStore(session)
    if followup.owner_team and store.team(followup.owner_team) is not None:
        working = working_time_for(store, None, f"team:{followup.owner_team}", settings.timezone)
    else:
        target = f"person:{followup.professional_id}"
        working = working_time_for(store, followup.professional_id, target, settings.timezone)
    if working.wall_clock:
        return at + timedelta(hours=8)
    for _, period_end in working.periods_from(at):
        return period_end
    return at + timedelta(days=1)


def record_offer(
    session: Session,
    *,
    referral: Referral,
    target: Target,
    response: Response,
    contact_by: datetime,
    method: str,
    now: datetime,
    settings: Settings,
) -> ContactFollowup:
    """Keep the promise of a has_information answer, and owe its notices, checks and the end of
    the day's look (see the module docstring)."""
    followup = ContactFollowup(
        referral_id=referral.referral_id,
        target_id=target.id,
        response_id=response.id,
        professional_id=response.responder_id,
        method=method,
        contact_by=contact_by,
        referrer_id=referral.referrer_id,
        owner_team=settings.owner_team,
        state=ContactState.AWAITING,
    )
    session.add(followup)
    session.flush()
    people: list[tuple[str, str | None]] = [(REFERRER, referral.referrer_id)]
    if settings.owner_team:
        people.append((OWNER, None))  # the owner's chain, resolved when due
    check_at = contact_by + CHECK_AFTER
    _owe(session, followup, OutboxKind.INFO_NOTICE, people, due_at=now)
    _owe(session, followup, OutboxKind.CONTACT_CHECK, people, due_at=check_at)
    outbox.enqueue_loop_message(
        session,
        OutboxKind.CONTACT_DEADLINE,
        referral.referral_id,
        target_id=target.id,
        due_at=end_of_working_day(session, followup, check_at, settings),
        followup_id=followup.id,
    )
    return followup


def may_answer_contact(followup: ContactFollowup, person: Person) -> bool:
    """The referrer, a person of the owner team, or someone with oversight."""
    return (
        person.person_id == followup.referrer_id
        or (followup.owner_team is not None and person.team_id == followup.owner_team)
        or person.has_permission(OVERSIGHT)
    )


@dataclass(frozen=True)
class ContactOutcome:
    """What a click on a contact check came to."""

    status: ContactStatus
    followup_id: int | None = None
    referral_id: str | None = None
    made: bool = False
    answered_by: str | None = None
    answered_at: datetime | None = None
    state: str | None = None  # the promise's state (the earlier answer's when `already`)


def record_contact(
    session: Session,
    followup_id: int | None,
    slack_user_id: str,
    made: bool,
    *,
    now: datetime,
    settings: Settings,
    person_id: str | None = None,
    workspace: str | None = None,
) -> ContactOutcome:
    """Record whether a promised contact happened, once, by someone who may say so: the Slack
    user who clicked (of `workspace`; None: the home one), or the person an email link was made
    for (`person_id`; docs/email.md)."""
    followup = session.get(ContactFollowup, followup_id) if followup_id is not None else None
    if followup is None:
        return ContactOutcome("not_found")
    if person_id is not None:
        # An email link: the person it was made for, while still in the rota.
        found = session.get(Person, person_id)
        person = found if found is not None and found.active else None
    else:
        person = person_for_slack_user(session, slack_user_id, workspace)
    version = RotaStore(session).current_rota_version()
    if person is None or not may_answer_contact(followup, person):
        if person_id is not None:
            who = {"via": "email link"}
        else:
            who = {"slack_user": slack_user_id, **({"workspace": workspace} if workspace else {})}
        audit.record(
            session,
            "response_refused",
            at=now,
            referral_id=followup.referral_id,
            actor=person.person_id if person is not None else (person_id or slack_user_id),
            recipient=followup.professional_id,
            detail={
                "response": "contact_made" if made else "contact_missed",
                "followup_id": followup.id,
                **who,
            },
            rota_version=version,
        )
        return ContactOutcome("refused", followup.id, followup.referral_id, made)
    state = ContactState.CONFIRMED if made else ContactState.MISSED
    claimed = session.execute(
        update(ContactFollowup)
        .where(ContactFollowup.id == followup.id, ContactFollowup.state == ContactState.AWAITING)
        .values(state=state, answered_by=person.person_id, answered_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(followup)
    if claimed != 1:
        return ContactOutcome(
            "already",
            followup.id,
            followup.referral_id,
            followup.state == ContactState.CONFIRMED,
            followup.answered_by,
            followup.answered_at,
            followup.state,
        )
    settle_contact(session, followup, actor=person.person_id, now=now, reason="answered")
    return ContactOutcome(
        "recorded", followup.id, followup.referral_id, made, person.person_id, now, state
    )


def settle_contact(
    session: Session, followup: ContactFollowup, *, actor: str, now: datetime, reason: str
) -> None:
    """Log a promise's outcome (already stored) and owe what follows a missed contact."""
    outbox.cancel_loop_rows(
        session, followup.id, (OutboxKind.CONTACT_DEADLINE, OutboxKind.CONTACT_CHECK)
    )
    target = session.get(Target, followup.target_id)
    detail = {
        "followup_id": followup.id,
        "method": followup.method,
        "contact_by": followup.contact_by.isoformat(),
        "reason": reason,
    }
    event = "contact_confirmed" if followup.state == ContactState.CONFIRMED else "contact_missed"
    audit.record(
        session,
        event,
        at=now,
        referral_id=followup.referral_id,
        actor=actor,
        recipient=followup.professional_id,
        target=target.spec if target is not None else None,
        detail=detail,
        rota_version=RotaStore(session).current_rota_version(),
    )
    if followup.state != ContactState.MISSED:
        return
    store = RotaStore(session)
    professional = store.person(followup.professional_id)
    told: list[tuple[str, str | None]] = [(PROFESSIONAL, followup.professional_id)]
    team = store.team(professional.team_id) if professional is not None else None
    if team is not None and team.manager_id and team.manager_id != followup.professional_id:
        manager = store.person(team.manager_id)
        if manager is not None and manager.active:
            told.append((MANAGER, manager.person_id))
    _owe(session, followup, OutboxKind.CONTACT_MISSED, told, due_at=now)


def _owe(
    session: Session,
    followup: ContactFollowup,
    kind: OutboxKind,
    people: list[tuple[str, str | None]],
    *,
    due_at: datetime,
) -> None:
    """A loop message of `kind` about the promise to each of `people` ((whom it is for, their
    person_id: None for the owner's chain, resolved when due)), due at `due_at`."""
    for to, person_id in people:
        outbox.enqueue_loop_message(
            session,
            kind,
            followup.referral_id,
            target_id=followup.target_id,
            due_at=due_at,
            recipient_id=person_id,
            followup_id=followup.id,
            to=to,
        )


def contact_deadline_passed(session: Session, followup: ContactFollowup, now: datetime) -> bool:
    """At the end of the day: a promise nobody answered is missed (True when it was)."""
    claimed = session.execute(
        update(ContactFollowup)
        .where(ContactFollowup.id == followup.id, ContactFollowup.state == ContactState.AWAITING)
        .values(state=ContactState.MISSED, answered_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        return False
    session.refresh(followup)
    settle_contact(
        session, followup, actor=ACTOR, now=now, reason="no answer by the end of the day"
    )
    return True
