"""The Web API client of each workspace: the home one from SLACK_BOT_TOKEN, a partner's from
its installation (decrypted from the installation store when asked for)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.oauth.installation_store import InstallationStore
from sqlalchemy.engine import Engine

from bot.settings import Settings
from bot.workspaces.store import EncryptedInstallationStore, OAuthStateStore
from bot.workspaces.tokens import TokenCipher, TokenKeyError

logger = logging.getLogger(__name__)

# How long a partner's token is reused before the store is read again. A token revoked in the
# meantime is refused by Slack, which the channel reads as "not installed" (bot/channels/slack.py).
TOKEN_CACHE_SECONDS = 10.0


def installation_store(settings: Settings, engine: Engine) -> EncryptedInstallationStore:
    """The installations of the app of SLACK_CLIENT_ID, in the bot's database."""
    assert settings.slack_client_id, "partner workspaces need SLACK_CLIENT_ID"
    return EncryptedInstallationStore(
        settings.slack_client_id, engine, TokenCipher(settings.token_keys)
    )


def state_store(engine: Engine) -> OAuthStateStore:
    """The OAuth `state` values of installs in progress, in the bot's database."""
    return OAuthStateStore(engine)


class WorkspaceClients:
    """One WebClient a workspace, each with the home client's base URL, timeout and retries."""

    def __init__(
        self,
        home: WebClient,
        store: InstallationStore | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = home
        self.store = store
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, WebClient | None]] = {}

    def client_for(self, workspace: str | None) -> WebClient | None:
        """The client of a workspace (None: the home one); None when the app is not installed
        there."""
        if workspace is None:
            return self.home
        if self.store is None:
            return None
        now = self._monotonic()
        with self._lock:
            cached = self._cached.get(workspace)
        if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        try:
            bot = self.store.find_bot(enterprise_id=None, team_id=workspace)
        except TokenKeyError:
            # The key that encrypted it is not in HANDOVER_TOKEN_KEY: as if not installed.
            logger.exception("cannot read the token of workspace %s", workspace)
            bot = None
        client = self._client(bot.bot_token) if bot is not None and bot.bot_token else None
        with self._lock:
            self._cached[workspace] = (now, client)
        return client

    def _client(self, token: str) -> WebClient:
        return WebClient(
            base_url=self.home.base_url,
            token=token,
            timeout=self.home.timeout,
            retry_handlers=list(self.home.retry_handlers),
        )
