"""Where installations live: slack_sdk's SQLAlchemy installation and OAuth state stores, on the
bot's own database and metadata (so Alembic migrates them), with every token encrypted.

`EncryptedInstallationStore` wraps slack_sdk's store: tokens are encrypted before a row is
written and decrypted after it is read, so Bolt's OAuth flow, its `authorize` and its
uninstall listeners use it unchanged while the table only ever holds ciphertext.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation, InstallationStore
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.sqlalchemy_utils import normalize_datetime_for_db
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import MetaData, String, Table, and_, delete, select, update
from sqlalchemy.engine import Engine

from bot.workspaces.tokens import TokenCipher
from rota.models import Base

logger = logging.getLogger(__name__)

BOTS_TABLE = "slack_bots"
INSTALLATIONS_TABLE = "slack_installations"
OAUTH_STATES_TABLE = "slack_oauth_states"
# Ciphertext is longer than the token it holds (a Fernet token of a 60-character Slack token is
# about 170 characters); room for the longest tokens Slack issues.
TOKEN_COLUMN_LENGTH = 1000
TOKEN_COLUMNS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token")
STATE_EXPIRY_SECONDS = 600  # an install must be finished within ten minutes of starting it


def _widen_tokens(table: Table) -> Table:
    for name in TOKEN_COLUMNS:
        if name in table.c:
            table.c[name].type = String(TOKEN_COLUMN_LENGTH)
    return table


class _Tables(SQLAlchemyInstallationStore):
    """slack_sdk's installation tables, with token columns wide enough for ciphertext."""

    @classmethod
    def build_installations_table(cls, metadata: MetaData, table_name: str) -> Table:
        return _widen_tokens(super().build_installations_table(metadata, table_name))

    @classmethod
    def build_bots_table(cls, metadata: MetaData, table_name: str) -> Table:
        return _widen_tokens(super().build_bots_table(metadata, table_name))


# The same tables on the bot's metadata, for Alembic (migrations/ and `alembic check`).
installations_table = _Tables.build_installations_table(Base.metadata, INSTALLATIONS_TABLE)
bots_table = _Tables.build_bots_table(Base.metadata, BOTS_TABLE)
oauth_states_table = SQLAlchemyOAuthStateStore.build_oauth_states_table(
    Base.metadata, OAUTH_STATES_TABLE
)


class OAuthStateStore(SQLAlchemyOAuthStateStore):
    """slack_sdk's state store, whose `consume` is one DELETE: of two instances given the same
    state (a browser's retry), exactly one accepts it."""

    def __init__(self, engine: Engine, expiration_seconds: int = STATE_EXPIRY_SECONDS) -> None:
        super().__init__(expiration_seconds=expiration_seconds, engine=engine)

    def consume(self, state: str) -> bool:
        now = normalize_datetime_for_db(datetime.now(tz=UTC))
        c = self.oauth_states.c
        with self.engine.begin() as conn:
            deleted = conn.execute(
                delete(self.oauth_states).where(and_(c.state == state, c.expire_at > now))
            )
        return deleted.rowcount == 1


def _encrypted(item: Any, cipher: TokenCipher) -> Any:
    stored = copy.copy(item)
    for name in TOKEN_COLUMNS:
        if hasattr(stored, name):
            setattr(stored, name, cipher.encrypt(getattr(stored, name)))
    return stored


def _decrypted(item: Any, cipher: TokenCipher) -> Any:
    if item is None:
        return None
    for name in TOKEN_COLUMNS:
        if hasattr(item, name):
            setattr(item, name, cipher.decrypt(getattr(item, name)))
    return item


class EncryptedInstallationStore(InstallationStore):
    """An installation store whose rows hold only ciphertext (slack_sdk's SQLAlchemy store,
    wrapped): what Bolt saves is encrypted, what it finds is decrypted."""

    def __init__(self, client_id: str, engine: Engine, cipher: TokenCipher) -> None:
        self.inner = _Tables(
            client_id=client_id,
            engine=engine,
            bots_table_name=BOTS_TABLE,
            installations_table_name=INSTALLATIONS_TABLE,
        )
        self.cipher = cipher

    @property
    def logger(self) -> logging.Logger:
        return logger

    def save(self, installation: Installation) -> None:
        self.inner.save(_encrypted(installation, self.cipher))
        logger.info("installed in workspace %s (%s)", installation.team_id, installation.team_name)

    def save_bot(self, bot: Bot) -> None:
        self.inner.save_bot(_encrypted(bot, self.cipher))

    def find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        found = self.inner.find_bot(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        return _decrypted(found, self.cipher)

    def find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        found = self.inner.find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            is_enterprise_install=is_enterprise_install,
        )
        return _decrypted(found, self.cipher)

    def delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        self.inner.delete_bot(enterprise_id=enterprise_id, team_id=team_id)
        logger.info("the bot of workspace %s was removed", team_id)

    def delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        self.inner.delete_installation(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id
        )
        logger.info("the installation in workspace %s was removed", team_id)


@dataclass(frozen=True)
class InstalledWorkspace:
    """One workspace the app is installed in, as `handover workspaces list` shows it."""

    team_id: str
    team_name: str | None
    bot_user_id: str | None
    scopes: str | None
    installed_at: datetime


def installed_workspaces(engine: Engine, client_id: str) -> list[InstalledWorkspace]:
    """Each workspace with a bot installed (its latest installation), by team ID."""
    c = bots_table.c
    rows = {}
    with engine.connect() as conn:
        for row in conn.execute(
            select(c.team_id, c.team_name, c.bot_user_id, c.bot_scopes, c.installed_at)
            .where(c.client_id == client_id)
            .order_by(c.installed_at, c.id)
        ):
            rows[row.team_id] = InstalledWorkspace(
                row.team_id, row.team_name, row.bot_user_id, row.bot_scopes, row.installed_at
            )
    return [rows[team] for team in sorted(rows, key=str)]


def rekey(engine: Engine, cipher: TokenCipher) -> int:
    """Re-encrypt every stored token under the first key of the cipher; the number of rows.

    One transaction: it either rewrites every row or none (a token no key opens stops it)."""
    changed = 0
    with engine.begin() as conn:
        for table in (installations_table, bots_table):
            columns = [table.c[name] for name in TOKEN_COLUMNS if name in table.c]
            for row in conn.execute(select(table.c.id, *columns)).all():
                values = {
                    column.name: cipher.rotate(getattr(row, column.name)) for column in columns
                }
                conn.execute(update(table).where(table.c.id == row.id).values(**values))
                changed += 1
    return changed
