"""Settings are read once from the environment, with clear errors for bad values."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot.settings import MIN_API_SECRET_BYTES, Settings, SettingsError

GOOD_SECRET = "k" * MIN_API_SECRET_BYTES


def test_the_dispatch_interval_defaults_to_30_seconds() -> None:
    assert Settings.from_env({}).dispatch_interval_seconds == 30.0
    assert Settings().dispatch_interval_seconds == 30.0


def test_the_dispatch_interval_is_read_once_into_settings() -> None:
    settings = Settings.from_env({"HANDOVER_DISPATCH_INTERVAL": " 0.2 "})
    assert settings.dispatch_interval_seconds == 0.2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "HANDOVER_DISPATCH_INTERVAL must be a number of seconds"),
        ("0", "HANDOVER_DISPATCH_INTERVAL must be positive"),
        ("-1", "HANDOVER_DISPATCH_INTERVAL must be positive"),
        ("nan", "HANDOVER_DISPATCH_INTERVAL must be a number of seconds"),
        ("inf", "HANDOVER_DISPATCH_INTERVAL must be a number of seconds"),
    ],
)
def test_a_bad_dispatch_interval_is_a_configuration_error(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{message}$"):
        Settings.from_env({"HANDOVER_DISPATCH_INTERVAL": text})


def test_the_slack_rate_is_read_once_into_settings() -> None:
    assert Settings.from_env({}).slack_rate == 10.0
    assert Settings.from_env({"HANDOVER_SLACK_RATE": "2.5"}).slack_rate == 2.5


@pytest.mark.parametrize("text", ["fast", "0", "-3", "nan", "inf", "1001"])
def test_a_bad_slack_rate_is_a_configuration_error(text: str) -> None:
    message = "HANDOVER_SLACK_RATE must be a number of messages a second, above 0 and at most 1000"
    with pytest.raises(SettingsError, match=f"^{message}$"):
        Settings.from_env({"HANDOVER_SLACK_RATE": text})


@pytest.mark.parametrize(
    "secret",
    ["Q", "Zq" * 15 + "Z", "é" * 15 + "Z"],  # 1, 31 and 31 bytes
    ids=["one-byte", "31-ascii", "31-bytes-of-utf8"],
)
def test_an_api_secret_shorter_than_32_bytes_is_a_configuration_error(secret: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"HANDOVER_API_SECRET": secret})
    message = str(refused.value)
    assert message.startswith("HANDOVER_API_SECRET must be at least 32 bytes (it has ")
    assert secret not in message
    with pytest.raises(SettingsError):
        Settings(api_secret=secret)


def test_an_api_secret_of_32_bytes_or_none_is_accepted() -> None:
    assert Settings.from_env({"HANDOVER_API_SECRET": GOOD_SECRET}).api_secret == GOOD_SECRET
    assert Settings.from_env({"HANDOVER_API_SECRET": "é" * 16}).api_secret == "é" * 16
    assert Settings.from_env({}).api_secret is None
    assert "k" * 8 not in repr(Settings(api_secret=GOOD_SECRET))


def test_serve_refuses_to_start_with_a_short_api_secret(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HANDOVER_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'h.db'}",
        SLACK_BOT_TOKEN="xoxb-not-used",
        SLACK_SIGNING_SECRET="not-used",
        HANDOVER_API_SECRET="hunter2-short",
    )
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "handover: configuration: HANDOVER_API_SECRET must be at least 32 bytes (it has 13); "
        "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
    )
    assert "hunter2" not in result.stdout + result.stderr
    assert not (tmp_path / "h.db").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("text", "days"), [(None, None), ("30", 30), (" 2555 ", 2555), ("36500", 36500)]
)
def test_retention_days(text: str | None, days: int | None) -> None:
    env = {} if text is None else {"HANDOVER_RETENTION_DAYS": text}
    assert Settings.from_env(env).retention_days == days


@pytest.mark.parametrize("text", ["0", "-5", "1.5", "ten", "٣", "36501", "9" * 40])
def test_retention_days_must_be_a_sensible_whole_number(text: str) -> None:
    with pytest.raises(SettingsError, match="HANDOVER_RETENTION_DAYS must be a whole number"):
        Settings.from_env({"HANDOVER_RETENTION_DAYS": text})


# ----- email reach -------------------------------------------------------------------------------

EMAIL = {
    "HANDOVER_SMTP_URL": "smtp://handover%40wexcombe.gov.uk:s3cr%2Ft@send.nhs.net:587",
    "HANDOVER_MAIL_FROM": "Handover <handover@wexcombe.gov.uk>",
    "HANDOVER_PUBLIC_URL": "https://handover.wexcombe.gov.uk/",
    "SLACK_SIGNING_SECRET": "signing-secret",
}


def test_email_settings_are_read_and_the_password_never_shows() -> None:
    settings = Settings.from_env(EMAIL)
    relay = settings.smtp
    assert relay is not None and settings.email_enabled
    assert (relay.host, relay.port, relay.implicit_tls) == ("send.nhs.net", 587, False)
    assert (relay.username, relay.password) == ("handover@wexcombe.gov.uk", "s3cr/t")
    assert settings.public_url == "https://handover.wexcombe.gov.uk"
    assert "s3cr" not in repr(settings) and "s3cr" not in repr(relay)
    implicit = Settings.from_env({**EMAIL, "HANDOVER_SMTP_URL": "smtps://relay.example"}).smtp
    assert implicit is not None and (implicit.port, implicit.implicit_tls) == (465, True)
    assert not Settings.from_env({}).email_enabled


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"HANDOVER_SMTP_URL": "http://u:s3cr@relay"},
            "HANDOVER_SMTP_URL must start with smtp:// (STARTTLS) or smtps:// (implicit TLS)",
        ),
        ({"HANDOVER_SMTP_URL": "smtp://u:s3cr@"}, "HANDOVER_SMTP_URL names no host"),
        (
            {"HANDOVER_SMTP_URL": "smtp://u@relay"},
            "HANDOVER_SMTP_URL gives a user without a password",
        ),
        (
            {"HANDOVER_SMTP_URL": "smtp://u:s3cr@relay:99999"},
            "HANDOVER_SMTP_URL is not a URL like smtp://user:pass@host:587",
        ),
        (
            {"HANDOVER_SMTP_URL": "smtp://u:s3cr@relay/path"},
            "HANDOVER_SMTP_URL takes no path or query: smtp://user:pass@host:port",
        ),
        (
            {"HANDOVER_MAIL_FROM": ""},
            "HANDOVER_SMTP_URL is set, so HANDOVER_MAIL_FROM is required too",
        ),
        (
            {"HANDOVER_PUBLIC_URL": ""},
            "HANDOVER_SMTP_URL is set, so HANDOVER_PUBLIC_URL is required too",
        ),
        (
            {"SLACK_SIGNING_SECRET": ""},
            "HANDOVER_SMTP_URL is set, so SLACK_SIGNING_SECRET is required too",
        ),
        (
            {"HANDOVER_MAIL_FROM": "handover"},
            "HANDOVER_MAIL_FROM 'handover' is not an email address",
        ),
        (
            {"HANDOVER_PUBLIC_URL": "handover.example.gov.uk"},
            "HANDOVER_PUBLIC_URL 'handover.example.gov.uk' is not a base URL like "
            "https://handover.example.gov.uk",
        ),
    ],
)
def test_a_bad_email_setting_is_a_configuration_error_without_its_secret(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({**EMAIL, **changes})
    assert str(refused.value) == message
    assert "s3cr" not in str(refused.value)


def test_urgent_offsets_and_the_repage_interval_default_as_the_contract_says() -> None:
    settings = Settings.from_env({})
    urgent, standard = settings.policy_for("urgent"), settings.policy_for("standard")
    assert (urgent.reminder_minutes, urgent.escalate_minutes, urgent.channel_minutes) == (
        15,
        30,
        60,
    )
    assert (standard.reminder_minutes, standard.escalate_minutes, standard.channel_minutes) == (
        60,
        120,
        240,
    )
    assert settings.oncall_repage_minutes == 10
    assert Settings() == Settings.from_env({})


def test_urgent_offsets_and_the_repage_interval_are_read() -> None:
    settings = Settings.from_env(
        {
            "HANDOVER_URGENT_REMINDER_MINUTES": "5",
            "HANDOVER_URGENT_ESCALATE_MINUTES": "10",
            "HANDOVER_URGENT_CHANNEL_MINUTES": "20",
            "HANDOVER_ONCALL_REPAGE_MINUTES": " 7 ",
        }
    )
    urgent = settings.policy_for("urgent")
    assert (urgent.reminder_minutes, urgent.escalate_minutes, urgent.channel_minutes) == (5, 10, 20)
    assert settings.policy_for("standard").reminder_minutes == 60
    assert settings.oncall_repage.total_seconds() == 7 * 60


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HANDOVER_URGENT_REMINDER_MINUTES": "0"},
            "HANDOVER_URGENT_REMINDER_MINUTES must be a positive number of minutes",
        ),
        (
            {"HANDOVER_URGENT_ESCALATE_MINUTES": "soon"},
            "HANDOVER_URGENT_ESCALATE_MINUTES must be a positive number of minutes",
        ),
        (
            {"HANDOVER_URGENT_REMINDER_MINUTES": "30"},
            "urgent escalation offsets must increase: reminder < escalate < channel",
        ),
        (
            {"HANDOVER_ONCALL_REPAGE_MINUTES": "-10"},
            "HANDOVER_ONCALL_REPAGE_MINUTES must be a positive number of minutes",
        ),
    ],
)
def test_bad_urgent_offsets_or_repage_interval_are_configuration_errors(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{message}$"):
        Settings.from_env(env)


# The defaults of the external contract (docs/reference/configuration.md), written out rather
# than taken from the code, so that a changed default fails here.
CONTRACT_DEFAULTS = {
    "database_url": "sqlite:///handover.db",
    "slack_api_url": "https://slack.com/api/",
    "port": 3000,
    "timezone_name": "Europe/London",
    "alert_roles": ("edt_manager",),
    "oncall_repage_minutes": 10,
    "slack_rate": 10.0,
    "retention_days": None,
    "edt_channel": None,
    "escalation_channel": None,
    "owner_team": None,
    "api_secret": None,
    "log_level": "INFO",
    "log_format": "text",
}


def test_every_default_is_the_one_the_reference_names() -> None:
    settings = Settings.from_env({})
    assert {name: getattr(settings, name) for name in CONTRACT_DEFAULTS} == CONTRACT_DEFAULTS


@pytest.mark.parametrize(
    ("variable", "text", "attribute", "value"),
    [
        (
            "DATABASE_URL",
            "postgresql+psycopg://h@db/ho",
            "database_url",
            "postgresql+psycopg://h@db/ho",
        ),
        ("SLACK_BOT_TOKEN", "xoxb-1-2", "slack_bot_token", "xoxb-1-2"),
        ("SLACK_SIGNING_SECRET", "signing", "slack_signing_secret", "signing"),
        ("SLACK_APP_TOKEN", "xapp-1-2", "slack_app_token", "xapp-1-2"),
        (
            "SLACK_API_URL",
            "http://127.0.0.1:8080/api",
            "slack_api_url",
            "http://127.0.0.1:8080/api/",
        ),
        ("PORT", "8080", "port", 8080),
        ("HANDOVER_TIMEZONE", "Europe/Dublin", "timezone_name", "Europe/Dublin"),
        ("HANDOVER_EDT_CHANNEL", "C0EDTCARDS", "edt_channel", "C0EDTCARDS"),
        ("HANDOVER_ESCALATION_CHANNEL", "C0MASHMGRS", "escalation_channel", "C0MASHMGRS"),
        ("HANDOVER_API_SECRET", GOOD_SECRET, "api_secret", GOOD_SECRET),
        (
            "HANDOVER_ALERT_ROLES",
            "edt_manager,police_dau",
            "alert_roles",
            ("edt_manager", "police_dau"),
        ),
        ("HANDOVER_OWNER_TEAM", "mash", "owner_team", "mash"),
        ("HANDOVER_RETENTION_DAYS", "400", "retention_days", 400),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("HANDOVER_LOG_FORMAT", "json", "log_format", "json"),
    ],
)
def test_each_variable_of_the_reference_reaches_its_setting(
    variable: str, text: str, attribute: str, value: object
) -> None:
    assert getattr(Settings.from_env({variable: text}), attribute) == value


def test_the_standard_offsets_are_read() -> None:
    settings = Settings.from_env(
        {
            "HANDOVER_REMINDER_MINUTES": "30",
            "HANDOVER_ESCALATE_MINUTES": " 90 ",
            "HANDOVER_CHANNEL_MINUTES": "180",
        }
    )
    standard = settings.policy_for("standard")
    assert (standard.reminder_minutes, standard.escalate_minutes, standard.channel_minutes) == (
        30,
        90,
        180,
    )
    assert settings.policy_for("urgent").reminder_minutes == 15


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HANDOVER_REMINDER_MINUTES": "0"},
            "HANDOVER_REMINDER_MINUTES must be a positive number of minutes",
        ),
        (
            {"HANDOVER_ESCALATE_MINUTES": "two hours"},
            "HANDOVER_ESCALATE_MINUTES must be a positive number of minutes",
        ),
        (
            {"HANDOVER_CHANNEL_MINUTES": "100"},
            "escalation offsets must increase: reminder < escalate < channel",
        ),
    ],
)
def test_bad_standard_offsets_are_configuration_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{message}$"):
        Settings.from_env(env)


METRICS_TOKEN = "mT0k" * 8  # 32 characters


def test_the_metrics_token_is_read_once_and_never_shown() -> None:
    settings = Settings.from_env({"HANDOVER_METRICS_TOKEN": METRICS_TOKEN})
    assert settings.metrics_token == METRICS_TOKEN
    assert METRICS_TOKEN not in repr(settings)
    assert Settings.from_env({"HANDOVER_METRICS_TOKEN": ""}).metrics_token is None
    assert Settings.from_env({}).metrics_token is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (
            "Zq" * 15 + "Z",
            "HANDOVER_METRICS_TOKEN must be at least 32 characters (it has 31); generate one "
            "with: python -c 'import secrets; print(secrets.token_hex(32))'",
        ),
        (
            'quoted"token' + "x" * 32,
            "HANDOVER_METRICS_TOKEN may hold only letters, digits and . _ ~ + / = - (it is sent "
            "as `Authorization: Bearer <token>`)",
        ),
    ],
    ids=["31-characters", "a-quote"],
)
def test_a_bad_metrics_token_is_a_configuration_error_without_the_token(
    token: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"HANDOVER_METRICS_TOKEN": token})
    assert str(refused.value) == message
    with pytest.raises(SettingsError):
        Settings(metrics_token=token)
