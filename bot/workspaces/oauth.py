"""Installing the app into partner workspaces with Bolt's OAuth v2 flow, and telling Bolt which
token answers a request from each workspace (docs/partner-workspaces.md).

The home workspace keeps its SLACK_BOT_TOKEN: it is never in the installation store. A request
from any other workspace is answered with that workspace's installed token, or refused when it
has none. `workspace_of` is how a handler names the workspace a request came from: None for the
home one, its team ID for a partner's.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urljoin

from slack_bolt import BoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.authorize import InstallationStoreAuthorize
from slack_bolt.error import BoltError
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import InstallationStore
from slack_sdk.oauth.state_store import OAuthStateStore

from bot.settings import Settings
from bot.workspaces.tokens import TokenKeyError

logger = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# What a partner's admin is asked to grant, each for a named call (docs/partner-workspaces.md):
# the app posts nothing in a partner's channels, so it reads no channel's history there.
PARTNER_SCOPES = (
    "chat:write",  # chat.postMessage (prompts, reminders, escalations), chat.update
    "commands",  # /handover (help, oncall, log) for the partner's own staff
    "im:write",  # conversations.open: the DM with a professional, for the exactly-once check
    "im:history",  # conversations.history of that DM only: was this prompt already delivered?
    "users:read",  # users.info; required by users:read.email
    "users:read.email",  # users.lookupByEmail: people.csv rows with an email but no Slack ID
)
# A request's context key: the workspace it came from (None: home).
WORKSPACE_KEY = "handover_workspace"


def authorization_url(settings: Settings) -> str:
    """Slack's install page beside its Web API (the stand-in's, when SLACK_API_URL is one)."""
    return urljoin(settings.slack_api_url, "../oauth/v2/authorize")


def oauth_settings(
    settings: Settings, installation_store: InstallationStore, state_store: OAuthStateStore
) -> OAuthSettings:
    """Bolt's OAuth settings: /slack/install and /slack/oauth_redirect under
    HANDOVER_PUBLIC_URL, the partner scopes, the bot's own stores."""
    assert settings.slack_client_id and settings.slack_client_secret and settings.public_url
    return OAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        scopes=list(PARTNER_SCOPES),
        user_scopes=[],
        redirect_uri=f"{settings.public_url}{REDIRECT_PATH}",
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        authorization_url=authorization_url(settings),
        installation_store=installation_store,
        installation_store_bot_only=True,
        state_store=state_store,
    )


def not_installed_message(settings: Settings) -> str:
    """What Bolt tells someone whose workspace has no installation of the app."""
    return (
        "Handover is not installed in this Slack workspace (or was removed from it), so it "
        f"cannot act here. A Slack admin can install it from {settings.public_url}{INSTALL_PATH}."
    )


def home_identity(client: WebClient) -> dict[str, Any]:
    """auth.test of SLACK_BOT_TOKEN: the home workspace's team ID and the bot's user.

    Raises BoltError caused by the SlackApiError, as Bolt's own start-up check does, so `serve`
    tells a refused token (exit 1) from an unreachable Slack (exit 3)."""
    try:
        return dict(client.auth_test().data)  # type: ignore[arg-type]
    except SlackApiError as exc:
        error = exc.response.get("error")
        raise BoltError(f"auth.test of SLACK_BOT_TOKEN failed: {error}") from exc


class WorkspaceAuthorize(InstallationStoreAuthorize):
    """The home workspace with SLACK_BOT_TOKEN; every other with its installation's token."""

    def __init__(
        self,
        *,
        home_token: str,
        home: dict[str, Any],
        installation_store: InstallationStore,
    ) -> None:
        super().__init__(logger=logger, installation_store=installation_store, bot_only=True)
        self.home_team_id = str(home["team_id"])
        self._home = home
        self._home_token = home_token

    def __call__(
        self,
        *,
        context: BoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **actor: Any,
    ) -> AuthorizeResult | None:
        if team_id in (None, self.home_team_id):
            context[WORKSPACE_KEY] = None
            return AuthorizeResult(
                enterprise_id=self._home.get("enterprise_id") or None,
                team_id=self.home_team_id,
                team=self._home.get("team"),
                url=self._home.get("url"),
                bot_user_id=self._home.get("user_id"),
                bot_id=self._home.get("bot_id"),
                bot_token=self._home_token,
                user_id=user_id,
            )
        context[WORKSPACE_KEY] = team_id
        try:
            found = super().__call__(
                context=context,
                enterprise_id=enterprise_id,
                team_id=team_id,
                user_id=user_id,
                **actor,
            )
        except TokenKeyError:
            logger.exception("cannot read the token of workspace %s", team_id)
            return None
        if found is None:
            logger.warning("a request from workspace %s, where the app is not installed", team_id)
        return found


def workspace_of(context: BoltContext | dict[str, Any]) -> str | None:
    """The workspace a request came from: None for the home one, a partner's team ID."""
    return context.get(WORKSPACE_KEY)
