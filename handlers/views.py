"""Modal submissions: the referral modal (errors are answered in the modal, keyed by block)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.services.directory import person_for_slack_user
from bot.services.intake import (
    MAX_NOTIFY,
    REPEATED_TARGET,
    SOURCE_SLACK,
    IntakeResult,
    InvalidReferral,
    receive_referral,
    validate_referral,
)
from bot.workspaces.oauth import workspace_of
from handlers import ids
from handlers.blocks.modal import build_plan_message
from handlers.commands import private_metadata
from handlers.deferred import after_answer
from handlers.guards import (
    DATABASE_DOWN,
    input_value,
    selected_value,
    selected_values,
    state_values,
)

logger = logging.getLogger(__name__)

# Where a field error of the intake service is shown in the modal.
_FIELD_BLOCKS = {
    "external_ref": ids.BLOCK_EXTERNAL_REF,
    "category": ids.BLOCK_CATEGORY,
    "urgency": ids.BLOCK_URGENCY,
    "referrer": ids.BLOCK_EXTERNAL_REF,
    "referred_at": ids.BLOCK_EXTERNAL_REF,
    "notify": ids.BLOCK_NOTIFY_PEOPLE,
}
_NOTIFY_BLOCKS = (
    (ids.BLOCK_NOTIFY_PEOPLE, ids.ACTION_NOTIFY_PEOPLE, "person"),
    (ids.BLOCK_NOTIFY_TEAMS, ids.ACTION_NOTIFY_TEAMS, "team"),
    (ids.BLOCK_NOTIFY_ROLES, ids.ACTION_NOTIFY_ROLES, "role"),
)


def register(app: App, services: Services) -> None:
    """Listen for the referral modal's submission."""

    @app.view(ids.REFERRAL_MODAL)
    def submit_referral(
        ack: Ack, body: dict, view: dict, client: WebClient, context: BoltContext
    ) -> None:
        data, origins = read_referral_modal(state_values(view))
        try:
            errors, result = _receive(
                services, body["user"]["id"], data, origins, workspace_of(context)
            )
        except SQLAlchemyError:
            logger.exception("could not record a referral from Slack: database unavailable")
            ack(response_action="errors", errors={ids.BLOCK_EXTERNAL_REF: DATABASE_DOWN})
            return
        if errors:
            ack(response_action="errors", errors=errors)
            return
        assert result is not None
        ack()
        services.wake_dispatcher()
        user_id, plan = body["user"]["id"], result.body
        after_answer(services, lambda: tell_submitter(client, user_id, view, plan, services))


def _receive(
    services: Services,
    slack_user_id: str,
    data: dict,
    origins: list[str],
    workspace: str | None = None,
) -> tuple[dict[str, str], IntakeResult | None]:
    """Record the referral in one transaction: (modal errors, result); errors when refused."""
    now = services.clock.now()
    settings = services.settings
    with services.session_factory.begin() as session:
        person = person_for_slack_user(session, slack_user_id, workspace)
        if person is None or not person.has_permission("referrer"):
            return {ids.BLOCK_EXTERNAL_REF: "Only EDT referrers may post referrals."}, None
        data["referrer"] = person.person_id
        try:
            request = validate_referral(session, data, tz=settings.timezone, now=now)
        except InvalidReferral as invalid:
            return modal_errors(invalid, origins, data["notify"]), None
        result = receive_referral(session, request, now=now, settings=settings, source=SOURCE_SLACK)
    if result.status == "conflict":
        return {
            ids.BLOCK_EXTERNAL_REF: "This case reference was already used for referral "
            f"{result.referral.referral_id} with different details."
        }, None
    return {}, result


def read_referral_modal(values: dict) -> tuple[dict, list[str]]:
    """The referral fields from the modal's state, and the block each notify target came from.

    A value of the wrong shape reads as not given, so it is answered as a missing field. The
    modal has no free text (docs/migrating-summaries.md): whatever else a submission's state
    holds, a `summary` included, is ignored, so nothing typed into Slack reaches the database.
    """
    data: dict = {
        # A case reference pasted from the case system often brings a space or a newline along.
        "external_ref": (
            input_value(values, ids.BLOCK_EXTERNAL_REF, ids.ACTION_EXTERNAL_REF) or ""
        ).strip(),
        "category": selected_value(values, ids.BLOCK_CATEGORY, ids.ACTION_CATEGORY) or "",
        "urgency": selected_value(values, ids.BLOCK_URGENCY, ids.ACTION_URGENCY) or "",
        "summary": "",
    }
    notify: list[str] = []
    origins: list[str] = []
    for block_id, action_id, kind in _NOTIFY_BLOCKS:
        for value in selected_values(values, block_id, action_id):
            notify.append(f"{kind}:{value}")
            origins.append(block_id)
    data["notify"] = notify
    return data, origins


def modal_errors(
    invalid: InvalidReferral, origins: list[str], notify: Sequence[str] = ()
) -> dict[str, str]:
    """Field errors of the intake service keyed by the modal's block_ids (first per block).

    `origins` and `notify` are the block and the target of each notify entry, in order.
    """
    errors: dict[str, str] = {}
    for error in invalid.errors:
        base, _, rest = error.field.partition("[")
        block = _FIELD_BLOCKS.get(base, ids.BLOCK_EXTERNAL_REF)
        index = -1
        if base == "notify" and rest.rstrip("]").isdigit():
            index = int(rest.rstrip("]"))
            block = origins[index] if index < len(origins) else ids.BLOCK_NOTIFY_PEOPLE
        message = error.message
        if base == "notify" and not rest:
            # The list as a whole: none chosen, or more than a referral may name.
            message = (
                f"Choose at most {MAX_NOTIFY} professionals, teams and roles in all."
                if origins
                else "Choose at least one professional, team or role."
            )
        if error.code == REPEATED_TARGET and 0 <= index < len(notify):
            # The API's message names list positions; the modal names the target.
            message = f"{notify[index]} is chosen twice."
        errors.setdefault(block, message[:150])
    return errors


def tell_submitter(
    client: WebClient, user_id: str, view: dict, body: dict, services: Services
) -> None:
    """Show the submitter privately who will be asked, and when."""
    message = build_plan_message(body["referral_id"], body, services.settings.timezone)
    channel = private_metadata(view).get("channel_id")
    try:
        if channel:
            client.chat_postEphemeral(channel=channel, user=user_id, **message)
        else:
            client.chat_postMessage(channel=user_id, **message)
    except SlackApiError:
        # The referral is recorded and its prompts are queued; only this courtesy note failed.
        logger.exception("could not show the plan of %s to its submitter", body["referral_id"])
