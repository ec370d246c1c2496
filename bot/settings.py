"""Settings read once from the environment into a frozen object.

The variables are docs/reference/configuration.md's.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.headerregistry import Address
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit
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
# A bearer token for /metrics: long enough not to be guessed, and safe in an HTTP header.
MIN_METRICS_TOKEN_BYTES = 32
_METRICS_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")  # RFC 6750's b64token
MAX_RETENTION_DAYS = 36_500  # a hundred years: beyond it a date overflows


DEFAULT_SLACK_RATE = 10.0  # docs/reference/configuration.md
MAX_SLACK_RATE = 1000.0


class SettingsError(ValueError):
    """A setting is missing or malformed; the message never contains a secret."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def log_settings(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """`LOG_LEVEL` and `HANDOVER_LOG_FORMAT` (docs/reference/configuration.md), checked.

    Read on their own, before everything else, because logging is set up first.
    """
    env = os.environ if environ is None else environ
    level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise SettingsError(
            f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {env.get('LOG_LEVEL')!r}"
        )
    log_format = env.get("HANDOVER_LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in LOG_FORMATS:
        raise SettingsError(
            f"HANDOVER_LOG_FORMAT must be text or json, got {env.get('HANDOVER_LOG_FORMAT')!r}"
        )
    return level, log_format


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
class SmtpRelay:
    """Where emails go: HANDOVER_SMTP_URL, parsed (the password never shows in a repr)."""

    host: str
    port: int
    implicit_tls: bool  # smtps:// (TLS from the first byte); smtp:// upgrades with STARTTLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def loopback(self) -> bool:
        """A relay on this machine (a local MTA): the only one spoken to without TLS."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


SMTP_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


def parse_smtp_url(url: str) -> SmtpRelay:
    """HANDOVER_SMTP_URL as a relay; the error message never repeats the URL (it holds a secret)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError(
            "HANDOVER_SMTP_URL is not a URL like smtp://user:pass@host:587"
        ) from None
    if parts.scheme not in SMTP_DEFAULT_PORTS:
        raise SettingsError(
            "HANDOVER_SMTP_URL must start with smtp:// (STARTTLS) or smtps:// (implicit TLS)"
        )
    if not parts.hostname:
        raise SettingsError("HANDOVER_SMTP_URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingsError("HANDOVER_SMTP_URL takes no path or query: smtp://user:pass@host:port")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and not password:
        raise SettingsError("HANDOVER_SMTP_URL gives a user without a password")
    return SmtpRelay(
        host=parts.hostname,
        port=port or SMTP_DEFAULT_PORTS[parts.scheme],
        implicit_tls=parts.scheme == "smtps",
        username=username,
        password=password,
    )


def parse_mail_from(value: str) -> str:
    """HANDOVER_MAIL_FROM: an address, optionally with a display name ("Handover <h@x.gov.uk>")."""
    _, address = parseaddr(value)
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        address = ""
    if "@" not in address or "\n" in value or "\r" in value:
        raise SettingsError(f"HANDOVER_MAIL_FROM {value!r} is not an email address")
    return value


def parse_public_url(value: str) -> str:
    """HANDOVER_PUBLIC_URL: the bot's https:// (or, on a test machine, http://) base URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query:
        raise SettingsError(
            f"HANDOVER_PUBLIC_URL {value!r} is not a base URL like https://handover.example.gov.uk"
        )
    return value.rstrip("/")


def check_metrics_token(token: str | None) -> None:
    """Refuse a /metrics token that is short or cannot be sent in a header (naming its length,
    never it)."""
    if token is None:
        return
    if not _METRICS_TOKEN_RE.match(token):
        raise SettingsError(
            "HANDOVER_METRICS_TOKEN may hold only letters, digits and . _ ~ + / = - (it is sent "
            "as `Authorization: Bearer <token>`)"
        )
    if len(token) < MIN_METRICS_TOKEN_BYTES:
        raise SettingsError(
            f"HANDOVER_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_BYTES} characters (it "
            f"has {len(token)}); generate one with: python -c 'import secrets; "
            "print(secrets.token_hex(32))'"
        )


@dataclass(frozen=True)
class EscalationPolicy:
    """Offsets of the escalation steps, in working minutes after a prompt is sent."""

    reminder_minutes: int = 60
    escalate_minutes: int = 120
    channel_minutes: int = 240


URGENT_POLICY = EscalationPolicy(reminder_minutes=15, escalate_minutes=30, channel_minutes=60)
DEFAULT_ONCALL_REPAGE_MINUTES = 10


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
    # team_id of the daytime social-care team (the MASH) told what partners offer
    owner_team: str | None = None
    api_secret: str | None = field(default=None, repr=False)
    # When set, GET /metrics needs `Authorization: Bearer <it>` (docs/reference/http.md).
    metrics_token: str | None = field(default=None, repr=False)
    alert_roles: tuple[str, ...] = ("edt_manager",)
    escalation: EscalationPolicy = EscalationPolicy()
    # An urgent referral's own offsets (HANDOVER_URGENT_*_MINUTES; docs/timing.md).
    urgent_escalation: EscalationPolicy = URGENT_POLICY
    # Wall-clock minutes before an unacknowledged on-call alert is sent again (and twice that
    # before it goes to the EDT channel): docs/reference/slack.md, "On-call alerts".
    oncall_repage_minutes: int = DEFAULT_ONCALL_REPAGE_MINUTES
    # Seconds between the dispatcher's safety passes (it also wakes at every due time).
    dispatch_interval_seconds: float = DEFAULT_DISPATCH_INTERVAL_SECONDS
    # Email reach (docs/reference/configuration.md): the relay, the From address, and the base
    # URL of the response pages that email links point at.
    smtp_url: str | None = field(default=None, repr=False)
    mail_from: str | None = None
    public_url: str | None = None
    retention_days: int | None = None
    # Messages a second to one workspace, shared by every dispatcher (bot/delivery/pacing.py).
    slack_rate: float = DEFAULT_SLACK_RATE
    # Partner workspaces (docs/partner-workspaces.md): the app's OAuth credentials and the keys
    # that encrypt installed workspaces' tokens (the first encrypts, every one decrypts).
    slack_client_id: str | None = None
    slack_client_secret: str | None = field(default=None, repr=False)
    token_keys: tuple[str, ...] = field(default=(), repr=False)
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        check_api_secret(self.api_secret)
        check_metrics_token(self.metrics_token)

    def policy_for(self, urgency: str | None) -> EscalationPolicy:
        """The escalation offsets of a referral of this urgency (`urgent` or `standard`)."""
        return self.urgent_escalation if urgency == "urgent" else self.escalation

    @property
    def oncall_repage(self) -> timedelta:
        """How long an on-call alert waits for its acknowledgement before it is sent again."""
        return timedelta(minutes=self.oncall_repage_minutes)

    @property
    def smtp(self) -> SmtpRelay | None:
        """The SMTP relay, when HANDOVER_SMTP_URL is set."""
        return parse_smtp_url(self.smtp_url) if self.smtp_url else None

    @property
    def email_enabled(self) -> bool:
        """Whether people can be reached by email (HANDOVER_SMTP_URL is set)."""
        return bool(self.smtp_url)

    @property
    def oauth_enabled(self) -> bool:
        """Whether partner workspaces can install the app (SLACK_CLIENT_ID is set)."""
        return bool(self.slack_client_id)

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
        urgent = EscalationPolicy(
            reminder_minutes=minutes("HANDOVER_URGENT_REMINDER_MINUTES", 15),
            escalate_minutes=minutes("HANDOVER_URGENT_ESCALATE_MINUTES", 30),
            channel_minutes=minutes("HANDOVER_URGENT_CHANNEL_MINUTES", 60),
        )
        if not (urgent.reminder_minutes < urgent.escalate_minutes < urgent.channel_minutes):
            raise SettingsError(
                "urgent escalation offsets must increase: reminder < escalate < channel"
            )
        repage_minutes = minutes("HANDOVER_ONCALL_REPAGE_MINUTES", DEFAULT_ONCALL_REPAGE_MINUTES)

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
        slack_rate = DEFAULT_SLACK_RATE
        rate_text = get("HANDOVER_SLACK_RATE")
        if rate_text is not None:
            try:
                slack_rate = float(rate_text)
            except ValueError:
                slack_rate = math.nan
            if not math.isfinite(slack_rate) or not 0 < slack_rate <= MAX_SLACK_RATE:
                raise SettingsError(
                    f"HANDOVER_SLACK_RATE must be a number of messages a second, "
                    f"above 0 and at most {MAX_SLACK_RATE:g}"
                )
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

        smtp_url = get("HANDOVER_SMTP_URL")
        mail_from = get("HANDOVER_MAIL_FROM")
        public_url = get("HANDOVER_PUBLIC_URL")
        if public_url is not None:
            public_url = parse_public_url(public_url)
        if mail_from is not None:
            parse_mail_from(mail_from)
        if smtp_url is not None:
            parse_smtp_url(smtp_url)
            for name, value in (
                ("HANDOVER_MAIL_FROM", mail_from),
                ("HANDOVER_PUBLIC_URL", public_url),
                # Response links are signed with a key derived from it (docs/email.md).
                ("SLACK_SIGNING_SECRET", get("SLACK_SIGNING_SECRET")),
            ):
                if value is None:
                    raise SettingsError(f"HANDOVER_SMTP_URL is set, so {name} is required too")

        client_id = get("SLACK_CLIENT_ID")
        token_key = get("HANDOVER_TOKEN_KEY")
        token_keys: tuple[str, ...] = ()
        if token_key is not None:
            from bot.workspaces.tokens import TokenKeyError, parse_token_keys

            try:
                token_keys = parse_token_keys(token_key)
            except TokenKeyError as exc:
                raise SettingsError(str(exc)) from None
        if client_id is not None:
            for name, value in (
                ("SLACK_CLIENT_SECRET", get("SLACK_CLIENT_SECRET")),
                ("HANDOVER_TOKEN_KEY", token_key),
                # Slack sends the admin back to {HANDOVER_PUBLIC_URL}/slack/oauth_redirect.
                ("HANDOVER_PUBLIC_URL", public_url),
            ):
                if value is None:
                    raise SettingsError(f"SLACK_CLIENT_ID is set, so {name} is required too")

        log_level, log_format = log_settings(env)
        return cls(
            log_level=log_level,
            log_format=log_format,
            database_url=normalize_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
            slack_bot_token=get("SLACK_BOT_TOKEN"),
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_app_token=get("SLACK_APP_TOKEN"),
            slack_api_url=api_url,
            port=int(port_text),
            timezone_name=tz_name,
            edt_channel=get("HANDOVER_EDT_CHANNEL"),
            escalation_channel=get("HANDOVER_ESCALATION_CHANNEL"),
            owner_team=get("HANDOVER_OWNER_TEAM"),
            api_secret=get("HANDOVER_API_SECRET"),
            metrics_token=get("HANDOVER_METRICS_TOKEN"),
            alert_roles=roles,
            escalation=policy,
            urgent_escalation=urgent,
            oncall_repage_minutes=repage_minutes,
            dispatch_interval_seconds=interval,
            retention_days=int(retention_text) if retention_text is not None else None,
            slack_rate=slack_rate,
            smtp_url=smtp_url,
            mail_from=mail_from,
            public_url=public_url,
            slack_client_id=client_id,
            slack_client_secret=get("SLACK_CLIENT_SECRET"),
            token_keys=token_keys,
        )
