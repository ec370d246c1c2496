"""Settings read once from the environment into a frozen object.

The variables are docs/reference/configuration.md's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///handover.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_DISPATCH_INTERVAL_SECONDS = 30.0

_ROLE_RE = re.compile(r"^[a-z0-9_:-]+$")
# An HMAC key shorter than its hash's output (SHA-256: 32 bytes) can be guessed offline from
# one signed request; see docs/security.md.
MIN_API_SECRET_BYTES = 32
MAX_RETENTION_DAYS = 36_500  # a hundred years: beyond it a date overflows


class SettingsError(ValueError):
    """A setting is missing or malformed; the message never contains a secret."""


def normalize_database_url(url: str) -> str:
    """Check DATABASE_URL names a database Handover can open; `postgres://` means psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingsError(
            "DATABASE_URL is not a database URL (e.g. sqlite:///handover.db or "
            "postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        # Platforms hand out postgres:// URLs; the installed driver is psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise SettingsError(
            f"DATABASE_URL uses {parsed.drivername!r}; Handover runs on sqlite or "
            "postgresql+psycopg"
        )
    return parsed.render_as_string(hide_password=False)


def check_api_secret(secret: str | None) -> None:
    """Refuse an API secret shorter than MIN_API_SECRET_BYTES (naming its length, never it)."""
    if secret is None:
        return
    length = len(secret.encode("utf-8"))
    if length < MIN_API_SECRET_BYTES:
        raise SettingsError(
            f"HANDOVER_API_SECRET must be at least {MIN_API_SECRET_BYTES} bytes (it has "
            f"{length}); generate one with: python -c 'import secrets; "
            "print(secrets.token_hex(32))'"
        )


@dataclass(frozen=True)
class EscalationPolicy:
    """Offsets of the escalation steps, in working minutes after a prompt is sent."""

    reminder_minutes: int = 60
    escalate_minutes: int = 120
    channel_minutes: int = 240


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    port: int = 3000
    timezone_name: str = "Europe/London"
    edt_channel: str | None = None
    escalation_channel: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    alert_roles: tuple[str, ...] = ("edt_manager",)
    escalation: EscalationPolicy = EscalationPolicy()
    # Seconds between the dispatcher's safety passes (it also wakes at every due time).
    dispatch_interval_seconds: float = DEFAULT_DISPATCH_INTERVAL_SECONDS
    retention_days: int | None = None

    def __post_init__(self) -> None:
        check_api_secret(self.api_secret)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone_name)

    @property
    def socket_mode(self) -> bool:
        return bool(self.slack_app_token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (empty values count as unset)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        port_text = get("PORT") or "3000"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SettingsError(f"PORT must be a TCP port number, got {port_text!r}")

        tz_name = get("HANDOVER_TIMEZONE") or "Europe/London"
        try:
            ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"HANDOVER_TIMEZONE {tz_name!r} is not a known time zone") from exc

        roles_text = get("HANDOVER_ALERT_ROLES") or "edt_manager"
        roles = tuple(r.strip() for r in re.split(r"[,;\s]+", roles_text) if r.strip())
        for role in roles:
            if not _ROLE_RE.match(role):
                raise SettingsError(f"HANDOVER_ALERT_ROLES has an invalid role {role!r}")

        def minutes(name: str, default: int) -> int:
            text = get(name)
            if text is None:
                return default
            if not text.isdigit() or int(text) <= 0:
                raise SettingsError(f"{name} must be a positive number of minutes")
            return int(text)

        policy = EscalationPolicy(
            reminder_minutes=minutes("HANDOVER_REMINDER_MINUTES", 60),
            escalate_minutes=minutes("HANDOVER_ESCALATE_MINUTES", 120),
            channel_minutes=minutes("HANDOVER_CHANNEL_MINUTES", 240),
        )
        if not (policy.reminder_minutes < policy.escalate_minutes < policy.channel_minutes):
            raise SettingsError("escalation offsets must increase: reminder < escalate < channel")

        interval_text = get("HANDOVER_DISPATCH_INTERVAL")
        interval = DEFAULT_DISPATCH_INTERVAL_SECONDS
        if interval_text is not None:
            try:
                interval = float(interval_text)
            except ValueError:
                interval = math.nan
            if not math.isfinite(interval):
                raise SettingsError("HANDOVER_DISPATCH_INTERVAL must be a number of seconds")
            if interval <= 0:
                raise SettingsError("HANDOVER_DISPATCH_INTERVAL must be positive")
        retention_text = get("HANDOVER_RETENTION_DAYS")
        if retention_text is not None and (
            not retention_text.isascii()
            or not retention_text.isdigit()
            or not 1 <= int(retention_text) <= MAX_RETENTION_DAYS
        ):
            raise SettingsError(
                f"HANDOVER_RETENTION_DAYS must be a whole number of days from 1 to "
                f"{MAX_RETENTION_DAYS}"
            )

        api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        if not api_url.endswith("/"):
            api_url += "/"

        return cls(
            database_url=normalize_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            slack_bot_token=get("SLACK_BOT_TOKEN"),
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_app_token=get("SLACK_APP_TOKEN"),
            slack_api_url=api_url,
            port=int(port_text),
            timezone_name=tz_name,
            edt_channel=get("HANDOVER_EDT_CHANNEL"),
            escalation_channel=get("HANDOVER_ESCALATION_CHANNEL"),
            api_secret=get("HANDOVER_API_SECRET"),
            alert_roles=roles,
            escalation=policy,
            dispatch_interval_seconds=interval,
            retention_days=int(retention_text) if retention_text is not None else None,
        )
