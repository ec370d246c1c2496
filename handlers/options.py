"""Search-as-you-type options for the referral modal's external selects."""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_bolt import Ack, App
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.services.directory import search_people, search_roles, search_teams, search_text
from handlers import ids
from handlers.blocks.modal import build_options

logger = logging.getLogger(__name__)

_SEARCHES: dict[str, Callable] = {
    ids.ACTION_NOTIFY_PEOPLE: search_people,
    ids.ACTION_NOTIFY_TEAMS: search_teams,
    ids.ACTION_NOTIFY_ROLES: search_roles,
}


def register(app: App, services: Services) -> None:
    """Answer options requests for people, teams and roles."""
    for action_id, search in _SEARCHES.items():
        app.options(action_id)(_make_listener(services, search))


def _make_listener(services: Services, search: Callable) -> Callable:
    def load_options(ack: Ack, payload: dict) -> None:
        query = search_text(payload.get("value"))
        try:
            with services.session_factory() as session:
                choices = search(session, query)
        except SQLAlchemyError:
            # Nothing to offer; the select shows "no results" and the user can type again.
            logger.exception("options search: database unavailable")
            choices = []
        ack(**build_options(choices))

    return load_options
