"""`/handover log [open|overdue|REFERRAL_ID]`: the escalation log for managers, in private."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from slack_bolt import Respond

from bot.context import Services
from bot.services.directory import person_for_slack_user
from bot.services.home import ReferralRow
from bot.services.logbook import (
    count_open_referrals,
    coverage_for_referrals,
    open_referrals,
    overdue_prompts,
    referral_history,
)
from bot.services.visibility import reads_the_log, scope_of
from bot.workspaces.oauth import WORKSPACE_KEY
from handlers.blocks.home import (
    build_log_open_message,
    build_log_overdue_message,
    build_log_referral_message,
)
from handlers.blocks.prompt import ReferralFacts
from handlers.blocks.response import NO_SUCH_REFERRAL
from handlers.guards import is_referral_id

logger = logging.getLogger(__name__)

MAX_OPEN_IN_MESSAGE = 100  # packed several to a section; the Home tab pages through the rest
REFUSAL = (
    "Only managers may read the escalation log. Ask for the `manager` (your teams' referrals) "
    "or `oversight` (every referral) permission on your entry in people.csv."
)


def _private(respond: Respond, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    if blocks is None:
        respond(text=text, response_type="ephemeral")
    else:
        respond(text=text, blocks=blocks, response_type="ephemeral")


def handle_log(services: Services, command: dict, args: list[str], respond: Respond) -> None:
    """Answer `/handover log ...` privately, with the referrals the person may read (need to
    know: bot.services.visibility); refuse anyone without `manager` or `oversight`."""
    tz = services.settings.timezone
    what = args[0] if args else "open"
    with services.session_factory() as session:
        person = person_for_slack_user(session, command["user_id"], command.get(WORKSPACE_KEY))
        if person is None or not reads_the_log(person):
            logger.info("refused /handover log for Slack user %s", command["user_id"])
            _private(respond, REFUSAL)
            return
        now = services.clock.now()
        scope = scope_of(session, person)
        if what.lower() == "open":
            total = count_open_referrals(session, scope)
            referrals = open_referrals(session, limit=MAX_OPEN_IN_MESSAGE, scope=scope)
            coverage = coverage_for_referrals(session, [r.referral_id for r in referrals], tz)
            overdue = Counter(
                o.referral_id for o in overdue_prompts(session, now, services.settings, tz, scope)
            )
            rows = [
                ReferralRow(ReferralFacts.of(r), coverage[r.referral_id], overdue[r.referral_id])
                for r in referrals
            ]
            _private(respond, f"{total} open referrals", build_log_open_message(rows, total, tz))
            return
        if what.lower() == "overdue":
            overdue_list = overdue_prompts(session, now, services.settings, tz, scope)
            _private(
                respond,
                f"{len(overdue_list)} overdue",
                build_log_overdue_message(overdue_list, tz),
            )
            return
        referral_id = what.upper()
        # A referral that does not concern their teams reads as unknown: need to know.
        history = (
            referral_history(session, referral_id, tz)
            if scope.allows(session, referral_id)
            else None
        )
        if history is None:
            # What was typed is echoed only when it has the referral ID format.
            missing = (
                f"No referral {referral_id}." if is_referral_id(referral_id) else NO_SUCH_REFERRAL
            )
            _private(
                respond,
                f"{missing} Use `/handover log open`, `/handover log overdue` "
                "or `/handover log REFERRAL_ID`.",
            )
            return
        _private(
            respond,
            f"Referral {referral_id}",
            build_log_referral_message(history, tz),
        )
