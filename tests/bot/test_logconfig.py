"""Logging set up in one place: LOG_LEVEL and HANDOVER_LOG_FORMAT checked; JSON a line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logconfig import WITHHELD, JsonFormatter, configure_logging
from bot.settings import Settings, SettingsError, log_settings


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord(
        "bot.delivery.dispatcher", logging.INFO, __file__, 1, message, args, exc_info
    )
    rec.created = 1_798_535_400.125  # 2026-12-29T09:10:00.125Z
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_json_line_has_time_level_logger_message_and_the_structured_fields() -> None:
    line = JsonFormatter().format(
        record("dispatch: %d prompts sent", 2, sent=2, dispatcher="web-1", port=3000)
    )
    assert json.loads(line) == {
        "time": "2026-12-29T09:10:00.125+00:00",
        "level": "INFO",
        "logger": "bot.delivery.dispatcher",
        "message": "dispatch: 2 prompts sent",
        "sent": 2,
        "dispatcher": "web-1",
        "port": 3000,
    }
    assert "\n" not in line


def test_fields_named_like_a_secret_or_a_summary_are_withheld() -> None:
    line = JsonFormatter().format(
        record(
            "x",
            summary="Mother assaulted SECRET-NARRATIVE",
            slack_bot_token="xoxb-123",
            detail={"api_secret": "s3cret", "ok": True},
        )
    )
    entry = json.loads(line)
    assert entry["summary"] == entry["slack_bot_token"] == WITHHELD
    assert entry["detail"] == {"api_secret": WITHHELD, "ok": True}
    assert "SECRET-NARRATIVE" not in line and "xoxb" not in line and "s3cret" not in line


def test_an_error_carries_its_traceback_as_one_field() -> None:
    try:
        raise RuntimeError("slack down")
    except RuntimeError:
        import sys

        line = JsonFormatter().format(record("send failed", exc_info=sys.exc_info()))
    entry = json.loads(line)
    assert entry["message"] == "send failed"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("RuntimeError: slack down")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("INFO", "text")),
        ({"LOG_LEVEL": "debug", "HANDOVER_LOG_FORMAT": "JSON"}, ("DEBUG", "json")),
        ({"LOG_LEVEL": " warn ", "HANDOVER_LOG_FORMAT": ""}, ("WARNING", "text")),
        ({"LOG_LEVEL": "ERROR"}, ("ERROR", "text")),
    ],
)
def test_log_settings_read_any_case_with_defaults(env, expected) -> None:
    assert log_settings(env) == expected
    settings = Settings.from_env(env)
    assert (settings.log_level, settings.log_format) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LOG_LEVEL": "verbose"},
            "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'",
        ),
        ({"LOG_LEVEL": "10"}, "LOG_LEVEL must be one of"),
        (
            {"HANDOVER_LOG_FORMAT": "logfmt"},
            "HANDOVER_LOG_FORMAT must be text or json, got 'logfmt'",
        ),
    ],
)
def test_a_bad_value_is_a_configuration_error_naming_the_variable(env, message) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        log_settings(env)
    with pytest.raises(SettingsError, match=message.split(",")[0]):
        Settings.from_env(env)


def test_configure_logging_sets_the_level_and_format_on_a_fresh_root(monkeypatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()

    handler = configure_logging("WARNING", "json", stream=stream)
    try:
        assert root.level == logging.WARNING
        assert logging.getLogger("apscheduler").level == logging.WARNING
        logging.getLogger("bot.test").info("hidden")
        logging.getLogger("bot.test").warning("shown %s", "once", extra={"row": 7})
    finally:
        root.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"], entry["row"]) == (
        "WARNING",
        "bot.test",
        "shown once",
        7,
    )


def test_configure_logging_leaves_an_embedding_programs_handlers_alone(monkeypatch) -> None:
    root = logging.getLogger()
    theirs = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [theirs])
    assert configure_logging("DEBUG", "json") is None
    assert root.handlers == [theirs]
