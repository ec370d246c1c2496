"""The app's installations: which bot token belongs to which workspace, and OAuth v2.

An admin approving the install of the app into workspace T… is simulated by ``authorize``
(the stand-in's ``/oauth/v2/authorize`` page, or the control API), which issues a one-time
``code``; ``oauth.v2.access`` exchanges it, with the app's client ID and secret, for the
workspace's bot token. ``auth.revoke`` and an uninstall revoke tokens. The caller holds the
stand-in's lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.slack_standin.model import ControlError
from bot.slack_standin.workspace import SlackError

# What the app asks for in manifest.yml; the scope granted when an authorize names none.
DEFAULT_SCOPE = (
    "chat:write,commands,im:history,im:write,users:read,users:read.email,channels:history"
)


@dataclass(frozen=True)
class AppCredentials:
    """The app's identity and secrets, as on its Basic Information page."""

    app_id: str = "A0HANDOVER"
    client_id: str = "1000000000.2000000000"
    client_secret: str = field(default="standin-client-secret", repr=False)


@dataclass
class Grant:
    """An admin's approval of an install: redeemed once by oauth.v2.access."""

    code: str
    team_id: str
    user_id: str
    scope: str
    user_scope: str
    redirect_uri: str | None
    used: bool = False


class Installations:
    """Bot and app-level tokens, the workspace each bot token acts for, and OAuth codes."""

    def __init__(
        self,
        home_team_id: str,
        *,
        home_tokens: Iterable[str] | None = None,
        app_tokens: Iterable[str] | None = None,
        credentials: AppCredentials | None = None,
    ) -> None:
        self.home_team_id = home_team_id
        self.credentials = credentials or AppCredentials()
        # None: any xoxb- token not bound to another workspace acts for the home workspace.
        self._home_accepts_any = home_tokens is None
        self._app_tokens = frozenset(app_tokens) if app_tokens is not None else None
        self._team_by_token: dict[str, str] = {t: home_team_id for t in home_tokens or ()}
        self._scope_by_team: dict[str, str] = {}
        self._revoked: set[str] = set()
        self._grants: dict[str, Grant] = {}
        self._uninstalled: set[str] = set()

    # ----- tokens --------------------------------------------------------------------------

    def team_for_bot_token(self, token: str | None) -> str:
        """The workspace a bot token acts for; raise SlackError as Slack answers a bad one."""
        if not token:
            raise SlackError("not_authed")
        if token in self._revoked:
            raise SlackError("token_revoked")
        team = self._team_by_token.get(token)
        if team is not None:
            return team
        if (
            self._home_accepts_any
            and token.startswith("xoxb-")
            and self.home_team_id not in self._uninstalled
        ):
            # Remember it, so that an uninstall of the home workspace revokes it too.
            self._team_by_token[token] = self.home_team_id
            return self.home_team_id
        raise SlackError("invalid_auth")

    def check_app_token(self, token: str | None) -> None:
        """Accept an app-level token (``xapp-``), as Socket Mode needs; refuse others."""
        if not token:
            raise SlackError("not_authed")
        if token in self._revoked:
            raise SlackError("token_revoked")
        if not token.startswith("xapp-"):
            raise SlackError("not_allowed_token_type")
        if self._app_tokens is not None and token not in self._app_tokens:
            raise SlackError("invalid_auth")

    def check_client(self, client_id: str | None, client_secret: str | None) -> None:
        """Check the app's client credentials (Basic auth or form arguments)."""
        if client_id != self.credentials.client_id:
            raise SlackError("invalid_client_id")
        if client_secret != self.credentials.client_secret:
            raise SlackError("bad_client_secret")

    def bind(self, token: str, team_id: str) -> None:
        """Make ``token`` a bot token of workspace ``team_id``."""
        if not token.startswith("xoxb-"):
            raise ControlError("a bot token starts with xoxb-")
        self._team_by_token[token] = team_id
        self._revoked.discard(token)
        self._uninstalled.discard(team_id)

    def tokens_of(self, team_id: str) -> list[str]:
        """The bot tokens of a workspace that still work."""
        return [
            token
            for token, team in self._team_by_token.items()
            if team == team_id and token not in self._revoked
        ]

    def is_installed(self, team_id: str) -> bool:
        """Whether the app can act in workspace ``team_id``."""
        if team_id in self._uninstalled:
            return False
        return bool(self.tokens_of(team_id)) or (
            team_id == self.home_team_id and self._home_accepts_any
        )

    def revoke(self, token: str) -> str | None:
        """Revoke one token; return the workspace left without a working bot token, if any."""
        self._revoked.add(token)
        team = self._team_by_token.get(token)
        if team is not None and not self.tokens_of(team) and not self._accepts_any(team):
            return team
        return None

    def uninstall(self, team_id: str) -> list[str]:
        """Remove the app from a workspace: revoke its tokens; return them."""
        tokens = self.tokens_of(team_id)
        self._revoked.update(tokens)
        self._uninstalled.add(team_id)
        return tokens

    def reset(self) -> None:
        """Forget revocations, uninstalls and unredeemed codes (tests start clean)."""
        self._revoked.clear()
        self._uninstalled.clear()
        self._grants.clear()

    def _accepts_any(self, team_id: str) -> bool:
        return team_id == self.home_team_id and self._home_accepts_any

    # ----- OAuth v2 ----------------------------------------------------------------------

    def authorize(
        self,
        team_id: str,
        user_id: str,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        user_scope: str = "",
        redirect_uri: str | None = None,
    ) -> Grant:
        """An admin of ``team_id`` approves the install: a one-time code for the app."""
        if client_id is not None and client_id != self.credentials.client_id:
            raise ControlError(f"unknown client_id {client_id!r}")
        grant = Grant(
            code=f"{secrets.randbelow(10**12):012d}.{secrets.token_hex(16)}",
            team_id=team_id,
            user_id=user_id,
            scope=scope or DEFAULT_SCOPE,
            user_scope=user_scope,
            redirect_uri=redirect_uri,
        )
        self._grants[grant.code] = grant
        return grant

    def redeem(self, code: str, redirect_uri: str | None) -> tuple[Grant, str]:
        """Exchange a code (once) for the workspace's bot token, issuing one if needed."""
        grant = self._grants.get(code)
        if grant is None:
            raise SlackError("invalid_code")
        if grant.used:
            # Slack refuses a code used before, as an authorization code must be (RFC 6749).
            raise SlackError("invalid_code")
        if grant.redirect_uri and redirect_uri != grant.redirect_uri:
            raise SlackError("bad_redirect_uri")
        grant.used = True
        existing = [t for t in self.tokens_of(grant.team_id) if t.startswith("xoxb-")]
        # A reinstall keeps the workspace's bot token, as Slack does without token rotation.
        token = existing[0] if existing else f"xoxb-{grant.team_id}-{secrets.token_hex(12)}"
        self.bind(token, grant.team_id)
        self._scope_by_team[grant.team_id] = grant.scope
        return grant, token
