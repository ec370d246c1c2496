"""Workspace tokens at rest: Fernet under HANDOVER_TOKEN_KEY, several keys for rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from bot.settings import Settings, SettingsError
from bot.workspaces.tokens import PREFIX, TokenCipher, TokenKeyError, parse_token_keys

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
TOKEN = "xoxb-1111-2222-police-bot-token"


def test_a_token_is_stored_as_ciphertext_and_read_back() -> None:
    cipher = TokenCipher(OLD)
    stored = cipher.encrypt(TOKEN)

    assert stored is not None and stored.startswith(PREFIX)
    assert TOKEN not in stored and "police" not in stored
    assert cipher.decrypt(stored) == TOKEN
    assert cipher.encrypt(TOKEN) != stored  # a fresh IV each time
    assert cipher.encrypt(None) is None and cipher.decrypt(None) is None


def test_rotation_new_key_first_reads_old_ciphertext_and_rewrites_it_under_the_new() -> None:
    before = TokenCipher(OLD).encrypt(TOKEN)
    both = TokenCipher(f"{NEW},{OLD}")

    assert both.decrypt(before) == TOKEN
    rotated = both.rotate(before)
    assert rotated != before
    assert TokenCipher(NEW).decrypt(rotated) == TOKEN
    with pytest.raises(TokenKeyError, match="opens under no key"):
        TokenCipher(OLD).decrypt(rotated)
    # The old key second, during the rollout: it still encrypts under the old one.
    assert TokenCipher(OLD).decrypt(TokenCipher(f"{OLD},{NEW}").encrypt(TOKEN)) == TOKEN


def test_plaintext_or_a_foreign_ciphertext_is_refused_without_showing_it() -> None:
    cipher = TokenCipher(OLD)
    with pytest.raises(TokenKeyError, match="not encrypted") as plain:
        cipher.decrypt(TOKEN)
    assert TOKEN not in str(plain.value)
    with pytest.raises(TokenKeyError, match="opens under no key"):
        cipher.decrypt(TokenCipher(NEW).encrypt(TOKEN))
    with pytest.raises(TokenKeyError):
        cipher.rotate(TOKEN)


def test_keys_are_checked_and_the_error_names_no_key() -> None:
    assert parse_token_keys(f" {NEW} , {OLD} ") == (NEW, OLD)
    with pytest.raises(TokenKeyError, match="key 2 of 2 is not a Fernet key") as bad:
        parse_token_keys(f"{NEW},not-a-key-but-a-secret")
    assert "not-a-key-but-a-secret" not in str(bad.value)
    with pytest.raises(TokenKeyError, match="empty"):
        parse_token_keys(" , ")


def test_settings_need_the_key_and_public_url_with_a_client_id() -> None:
    base = {
        "SLACK_CLIENT_ID": "1111.2222",
        "SLACK_CLIENT_SECRET": "secret",
        "HANDOVER_PUBLIC_URL": "https://handover.example.gov.uk",
        "HANDOVER_TOKEN_KEY": f"{NEW},{OLD}",
    }
    settings = Settings.from_env(base)
    assert settings.oauth_enabled and settings.token_keys == (NEW, OLD)
    assert NEW not in repr(settings) and "secret" not in repr(settings)
    assert not Settings.from_env({}).oauth_enabled

    for missing in ("SLACK_CLIENT_SECRET", "HANDOVER_TOKEN_KEY", "HANDOVER_PUBLIC_URL"):
        env = {k: v for k, v in base.items() if k != missing}
        with pytest.raises(SettingsError, match=f"so {missing} is required too"):
            Settings.from_env(env)
    with pytest.raises(SettingsError, match="key 1 of 1 is not a Fernet key") as bad:
        Settings.from_env({**base, "HANDOVER_TOKEN_KEY": "hunter2"})
    assert "hunter2" not in str(bad.value)
