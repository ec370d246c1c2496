"""A partner workspace's installation, saved as Bolt's OAuth flow saves it
(docs/partner-workspaces.md), for tests that need the app installed there."""

from __future__ import annotations

from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import Engine

from bot.settings import Settings
from bot.workspaces.clients import installation_store
from bot.workspaces.store import EncryptedInstallationStore


def save_installation(
    settings: Settings, engine: Engine, team_id: str, token: str, *, installer: str
) -> EncryptedInstallationStore:
    """Install the app in `team_id` with bot token `token`, by the user `installer` of that
    workspace; returns the store it is in."""
    store = installation_store(settings, engine)
    store.save(
        Installation(
            app_id="A0HANDOVER",
            team_id=team_id,
            bot_token=token,
            bot_id=f"B{team_id[1:]}BOT",
            bot_user_id=f"U{team_id[1:]}BOT",
            user_id=installer,
        )
    )
    return store
