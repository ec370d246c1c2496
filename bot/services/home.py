"""What a person's App Home shows: for managers the open referrals that concern their teams
(`oversight`: all of them; bot.services.visibility), what is overdue and each referral's
coverage; for everyone else their own open prompts; and for a referrer the referrals they
made, with each target's state and who offered information. Values only: the Block Kit is
`handlers.blocks.home.build_home`'s, and publishing it `bot.delivery.home`'s.

These functions take a session and never commit.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from bot.models import ContactFollowup, Referral, ReferralStatus, Target
from bot.services.directory import person_for_slack_user
from bot.services.logbook import (
    Coverage,
    OpenPrompt,
    Overdue,
    ReferralFacts,
    count_open_referrals,
    coverage_for_referrals,
    open_prompts_for_person,
    open_referrals,
    overdue_prompts,
)
from bot.services.visibility import OVERSIGHT, REFERRER, reads_the_log, scope_of
from bot.settings import Settings
from rota.models import Person, Team

MANAGER = "manager"
# A Home tab holds at most 100 blocks: a referral takes one section, a prompt two blocks.
REFERRALS_PER_PAGE = 20
PROMPTS_PER_PAGE = 20


def page_count(total: int, per_page: int) -> int:
    """How many pages `total` items fill (at least one)."""
    return max(1, math.ceil(total / per_page))


def clamp_page(page: int, pages: int) -> int:
    """`page` within 1..pages."""
    return min(max(1, page), pages)


@dataclass(frozen=True)
class ReferralRow:
    """One open referral on the manager's Home: its safe facts, coverage and overdue count."""

    facts: ReferralFacts
    coverage: Coverage
    overdue: int = 0


@dataclass(frozen=True)
class Offer:
    """Information a professional offered on a referral, and whether the contact happened."""

    person_id: str
    name: str
    method: str
    contact_by: datetime
    state: str  # awaiting | confirmed | missed


@dataclass(frozen=True)
class MyReferral:
    """A referral the person made: its facts, coverage, each target's state and the offers."""

    facts: ReferralFacts
    coverage: Coverage
    targets: list[tuple[str, str]]  # (target, state)
    offers: list[Offer]


@dataclass(frozen=True)
class ManagerHome:
    """A manager's Home: one page of open referrals, what is overdue, their own prompts."""

    referrals: list[ReferralRow]
    total_open: int
    overdue: list[Overdue]
    own_prompts: list[OpenPrompt]
    page: int
    pages: int
    my_referrals: list[MyReferral] = field(default_factory=list)
    everything: bool = False  # oversight: every referral, not only their teams'


@dataclass(frozen=True)
class ProfessionalHome:
    """Anyone else's Home: one page of their unanswered prompts."""

    prompts: list[OpenPrompt]
    total: int
    page: int
    pages: int
    my_referrals: list[MyReferral] = field(default_factory=list)


MY_REFERRALS_SHOWN = 10


def referrals_made_by(session: Session, person_id: str, tz: ZoneInfo) -> list[MyReferral]:
    """The open referrals `person_id` made (the latest first), with their targets and offers."""
    referrals = list(
        session.scalars(
            select(Referral)
            .where(Referral.referrer_id == person_id, Referral.status == ReferralStatus.OPEN)
            .order_by(Referral.received_at.desc(), Referral.referral_id)
            .limit(MY_REFERRALS_SHOWN)
        )
    )
    ids = [r.referral_id for r in referrals]
    if not ids:
        return []
    coverage = coverage_for_referrals(session, ids, tz)
    targets: dict[str, list[tuple[str, str]]] = {r: [] for r in ids}
    for t in session.scalars(
        select(Target).where(Target.referral_id.in_(ids)).order_by(Target.position)
    ):
        targets[t.referral_id].append((t.spec, t.state))
    offers: dict[str, list[Offer]] = {r: [] for r in ids}
    rows = session.execute(
        select(ContactFollowup, Person.name)
        .join(Person, Person.person_id == ContactFollowup.professional_id, isouter=True)
        .where(ContactFollowup.referral_id.in_(ids))
        .order_by(ContactFollowup.id)
    ).all()
    for followup, name in rows:
        offers[followup.referral_id].append(
            Offer(
                followup.professional_id,
                name or followup.professional_id,
                followup.method,
                followup.contact_by,
                followup.state,
            )
        )
    return [
        MyReferral(ReferralFacts.of(r), coverage[r.referral_id], targets[r.referral_id],
                   offers[r.referral_id])
        for r in referrals
    ]  # fmt: skip


HomeContent = ManagerHome | ProfessionalHome | None  # None: a Slack user not in the rota


def home_content(
    session: Session,
    slack_user_id: str,
    now: datetime,
    settings: Settings,
    page: int = 1,
    workspace: str | None = None,
) -> HomeContent:
    """What the Home of `slack_user_id` of `workspace` (None: home) shows now (page `page`)."""
    tz = settings.timezone
    person = person_for_slack_user(session, slack_user_id, workspace)
    if person is None:
        return None
    mine = (
        referrals_made_by(session, person.person_id, tz) if person.has_permission(REFERRER) else []
    )
    if reads_the_log(person):
        scope = scope_of(session, person)
        total = count_open_referrals(session, scope)
        pages = page_count(total, REFERRALS_PER_PAGE)
        page = clamp_page(page, pages)
        referrals = open_referrals(
            session,
            offset=(page - 1) * REFERRALS_PER_PAGE,
            limit=REFERRALS_PER_PAGE,
            scope=scope,
        )
        coverage = coverage_for_referrals(session, [r.referral_id for r in referrals], tz)
        overdue = overdue_prompts(session, now, settings, tz, scope)
        overdue_by_referral = Counter(o.referral_id for o in overdue)
        rows = [
            ReferralRow(
                facts=ReferralFacts.of(r),
                coverage=coverage[r.referral_id],
                overdue=overdue_by_referral[r.referral_id],
            )
            for r in referrals
        ]
        return ManagerHome(
            referrals=rows,
            total_open=total,
            overdue=overdue,
            own_prompts=open_prompts_for_person(session, person.person_id),
            page=page,
            pages=pages,
            my_referrals=mine,
            everything=scope.everything,
        )
    prompts = open_prompts_for_person(session, person.person_id)
    pages = page_count(len(prompts), PROMPTS_PER_PAGE)
    page = clamp_page(page, pages)
    start = (page - 1) * PROMPTS_PER_PAGE
    return ProfessionalHome(
        prompts=prompts[start : start + PROMPTS_PER_PAGE],
        total=len(prompts),
        page=page,
        pages=pages,
        my_referrals=mine,
    )


def manager_slack_users(session: Session) -> list[tuple[str | None, str]]:
    """(workspace, Slack user) of active people with the `manager` permission."""
    rows = session.execute(
        select(Person, Team.workspace)
        .join(Team, Team.team_id == Person.team_id)
        .where(Person.active.is_(True))
        .where(Person.permissions.contains(MANAGER))
        .where(or_(Person.slack_user.is_not(None), Person.slack_user_found.is_not(None)))
        .order_by(Person.person_id)
    ).all()
    return [
        (workspace, p.slack_user_id)
        for p, workspace in rows
        if p.has_permission(MANAGER) and p.slack_user_id
    ]


def manager_slack_user_ids(session: Session) -> list[str]:
    """Slack user IDs of active people with the `manager` or `oversight` permission (whose Home
    shows referrals)."""
    people = session.scalars(
        select(Person)
        .where(Person.active.is_(True))
        .where(or_(Person.permissions.contains(MANAGER), Person.permissions.contains(OVERSIGHT)))
        .where(or_(Person.slack_user.is_not(None), Person.slack_user_found.is_not(None)))
        .order_by(Person.person_id)
    )
    return [p.slack_user_id for p in people if reads_the_log(p) and p.slack_user_id]
