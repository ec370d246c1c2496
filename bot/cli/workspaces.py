"""`handover workspaces list|rekey|remove`: the partner workspaces the app is installed in, and
the keeping of their tokens (docs/partner-workspaces.md)."""

from __future__ import annotations

import argparse
import re

from bot.db import create_db_engine
from bot.errors import InputError, ServiceUnavailable
from bot.settings import Settings
from bot.workspaces.tokens import TokenCipher, TokenKeyError

_TEAM_ID = re.compile(r"^T[A-Z0-9]{2,31}$")


def _needs_oauth(settings: Settings) -> None:
    if not settings.oauth_enabled or not settings.token_keys:
        raise InputError(
            "partner workspaces need SLACK_CLIENT_ID, SLACK_CLIENT_SECRET, HANDOVER_TOKEN_KEY "
            "and HANDOVER_PUBLIC_URL (docs/partner-workspaces.md)"
        )


def workspaces_list(args: argparse.Namespace, settings: Settings) -> int:
    """Each installed workspace: team ID, name, bot user, scopes, when installed."""
    from bot.workspaces.store import installed_workspaces

    _needs_oauth(settings)
    assert settings.slack_client_id
    engine = create_db_engine(settings.database_url)
    try:
        found = installed_workspaces(engine, settings.slack_client_id)
    finally:
        engine.dispose()
    if not found:
        print("no partner workspace has installed the app")
        return 0
    for workspace in found:
        print(
            f"{workspace.team_id}\t{workspace.team_name or ''}\t{workspace.bot_user_id or ''}\t"
            f"{workspace.scopes or ''}\tinstalled {workspace.installed_at:%Y-%m-%d %H:%M} UTC"
        )
    return 0


def workspaces_rekey(args: argparse.Namespace, settings: Settings) -> int:
    """Re-encrypt every stored token under the first key of HANDOVER_TOKEN_KEY."""
    from bot.workspaces.store import rekey

    if not settings.token_keys:
        raise InputError("HANDOVER_TOKEN_KEY is not set: there is no key to encrypt under")
    engine = create_db_engine(settings.database_url)
    try:
        count = rekey(engine, TokenCipher(settings.token_keys))
    except TokenKeyError as exc:
        raise InputError(f"{exc}; nothing was changed") from None
    finally:
        engine.dispose()
    print(f"re-encrypted the tokens of {count} stored row(s) under the first key")
    return 0


def workspaces_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Uninstall the app from a partner workspace (apps.uninstall) and forget its tokens."""
    from slack_sdk.errors import SlackApiError

    from bot.channels.slack import make_web_client
    from bot.workspaces.clients import installation_store

    _needs_oauth(settings)
    team_id = args.team_id
    if not _TEAM_ID.match(team_id):
        raise InputError(f"{team_id!r} is not a Slack workspace (team) ID like T0POLICE")
    engine = create_db_engine(settings.database_url)
    try:
        store = installation_store(settings, engine)
        bot = store.find_bot(enterprise_id=None, team_id=team_id)
        if bot is None:
            raise InputError(f"the app is not installed in workspace {team_id}")
        client = make_web_client(settings)
        client.token = bot.bot_token
        try:
            client.apps_uninstall(
                client_id=settings.slack_client_id, client_secret=settings.slack_client_secret
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error not in ("token_revoked", "invalid_auth", "account_inactive"):
                raise ServiceUnavailable(f"Slack refused apps.uninstall ({error})") from None
            # Already removed on Slack's side: only our copy of the token is left.
        store.delete_all(enterprise_id=None, team_id=team_id)
    finally:
        engine.dispose()
    print(f"removed the app from workspace {team_id} and deleted its tokens")
    return 0
