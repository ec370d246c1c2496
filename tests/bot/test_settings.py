"""Settings are read once from the environment, with clear errors for bad values."""

from __future__ import annotations

import pytest

from bot.settings import Settings, SettingsError


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
