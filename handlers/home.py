"""The App Home tab: managers see referrals, overdue work and coverage; others their prompts.

`publish_home` builds and publishes one user's Home; `refresh_homes` does it for several users
(call it after something they would see has changed); `register` handles the Previous/Next
buttons of a paginated Home.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.services.directory import person_for_slack_user
from bot.services.logbook import (
    count_open_referrals,
    coverage_for_referrals,
    open_prompts_for_person,
    open_referrals,
    overdue_prompts,
)
from bot.settings import Settings
from handlers.blocks.home import (
    HOME_NEXT,
    HOME_PREVIOUS,
    PROMPTS_PER_PAGE,
    REFERRALS_PER_PAGE,
    ReferralRow,
    build_manager_home,
    build_professional_home,
    build_unknown_user_home,
    clamp_page,
    page_count,
)
from handlers.blocks.prompt import ReferralFacts
from handlers.blocks.response import build_private_notice
from handlers.guards import DATABASE_DOWN, first_action
from rota.models import Person

logger = logging.getLogger(__name__)

MANAGER = "manager"


def build_home_view(
    session: Session, slack_user_id: str, now: datetime, settings: Settings, page: int = 1
) -> dict[str, Any]:
    """The Home view `slack_user_id` should see now (page `page` of a long list)."""
    tz = settings.timezone
    person = person_for_slack_user(session, slack_user_id)
    if person is None:
        return build_unknown_user_home()
    if person.has_permission(MANAGER):
        total = count_open_referrals(session)
        pages = page_count(total, REFERRALS_PER_PAGE)
        page = clamp_page(page, pages)
        referrals = open_referrals(
            session, offset=(page - 1) * REFERRALS_PER_PAGE, limit=REFERRALS_PER_PAGE
        )
        coverage = coverage_for_referrals(session, [r.referral_id for r in referrals], tz)
        overdue = overdue_prompts(session, now, settings.escalation, tz)
        overdue_by_referral = Counter(o.referral_id for o in overdue)
        rows = [
            ReferralRow(
                facts=ReferralFacts.of(r),
                coverage=coverage[r.referral_id],
                overdue=overdue_by_referral[r.referral_id],
            )
            for r in referrals
        ]
        return build_manager_home(
            referrals=rows,
            total_open=total,
            overdue=overdue,
            own_prompts=open_prompts_for_person(session, person.person_id),
            page=page,
            pages=pages,
            tz=tz,
            now=now,
        )
    prompts = open_prompts_for_person(session, person.person_id)
    pages = page_count(len(prompts), PROMPTS_PER_PAGE)
    page = clamp_page(page, pages)
    start = (page - 1) * PROMPTS_PER_PAGE
    return build_professional_home(
        prompts=prompts[start : start + PROMPTS_PER_PAGE],
        total=len(prompts),
        page=page,
        pages=pages,
        tz=tz,
    )


def publish_home(
    client: WebClient,
    session: Session,
    slack_user_id: str,
    now: datetime,
    settings: Settings,
    page: int = 1,
) -> None:
    """Build `slack_user_id`'s Home and publish it (`views.publish`)."""
    view = build_home_view(session, slack_user_id, now, settings, page)
    client.views_publish(user_id=slack_user_id, view=view)


def refresh_homes(
    client: WebClient,
    session_factory: sessionmaker[Session],
    slack_user_ids: Iterable[str],
    now: datetime,
    settings: Settings,
) -> None:
    """Republish each user's Home (first page); a Slack error for one does not stop the rest."""
    for slack_user_id in dict.fromkeys(slack_user_ids):
        try:
            with session_factory() as session:
                publish_home(client, session, slack_user_id, now, settings)
        except SlackApiError:
            logger.exception("could not refresh the Home tab of Slack user %s", slack_user_id)


def manager_slack_user_ids(session: Session) -> list[str]:
    """Slack user IDs of active people with the `manager` permission (whose Home shows all)."""
    people = session.scalars(
        select(Person)
        .where(Person.active.is_(True))
        .where(Person.permissions.contains(MANAGER))
        .where(or_(Person.slack_user.is_not(None), Person.slack_user_found.is_not(None)))
        .order_by(Person.person_id)
    )
    return [p.slack_user_id for p in people if p.has_permission(MANAGER) and p.slack_user_id]


def _requested_page(body: dict[str, Any]) -> int:
    try:
        return int(first_action(body).get("value") or 1)
    except (TypeError, ValueError):
        return 1


def register(app: App, services: Services) -> None:
    """Listen for the Home tab's Previous/Next buttons."""

    def turn_page(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        slack_user_id = body["user"]["id"]
        try:
            with services.session_factory() as session:
                publish_home(
                    client,
                    session,
                    slack_user_id,
                    services.clock.now(),
                    services.settings,
                    page=_requested_page(body),
                )
        except SQLAlchemyError:
            logger.exception("could not turn a Home page: database unavailable")
            try:
                with slack_edge("chat.postMessage"):
                    client.chat_postMessage(
                        channel=slack_user_id, **build_private_notice(DATABASE_DOWN)
                    )
            except SlackError:
                pass  # logged at the edge; nothing else can reach this user

    app.action(HOME_NEXT)(turn_page)
    app.action(HOME_PREVIOUS)(turn_page)


def refresh_after_change(
    client: WebClient, services: Services, slack_user_ids: Iterable[str]
) -> None:
    """Republish the Homes a change shows on: the people involved and every manager."""
    with services.session_factory() as session:
        users = [u for u in slack_user_ids if u] + manager_slack_user_ids(session)
    refresh_homes(client, services.session_factory, users, services.clock.now(), services.settings)
