"""The installation and OAuth state stores in the bot's database, with tokens encrypted; the
`handover workspaces` commands. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from bot.cli import main
from bot.workspaces.store import (
    EncryptedInstallationStore,
    OAuthStateStore,
    bots_table,
    installations_table,
    installed_workspaces,
    oauth_states_table,
    rekey,
)
from bot.workspaces.tokens import TokenCipher, TokenKeyError

CLIENT_ID = "1111.2222"
OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
POLICE_TOKEN = "xoxb-police-0000000000-1111111111111-abcdefABCDEF0123456789"
NHS_TOKEN = "xoxb-nhs-0000000000-2222222222222-abcdefABCDEF0123456789"


def installation(team_id: str, token: str, name: str) -> Installation:
    return Installation(
        app_id="A0HANDOVER",
        team_id=team_id,
        team_name=name,
        bot_token=token,
        bot_id=f"B{team_id[1:]}BOT",
        bot_user_id=f"U{team_id[1:]}BOT",
        bot_scopes=["chat:write", "im:write"],
        user_id="U0ADMIN",
        installed_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp(),
    )


def stored_tokens(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [
            *conn.scalars(select(installations_table.c.bot_token)),
            *conn.scalars(select(bots_table.c.bot_token)),
        ]


def test_tokens_are_stored_encrypted_and_found_decrypted(engine: Engine) -> None:
    store = EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD))
    store.save(installation("T0POLICE", POLICE_TOKEN, "Police"))
    store.save(installation("T0NHS", NHS_TOKEN, "NHS Trust"))

    raw = stored_tokens(engine)
    assert len(raw) == 4 and all(value.startswith("fernet:") for value in raw)
    assert not any(POLICE_TOKEN in value or NHS_TOKEN in value for value in raw)

    bot = store.find_bot(enterprise_id=None, team_id="T0POLICE")
    assert bot is not None and bot.bot_token == POLICE_TOKEN and bot.bot_user_id == "U0POLICEBOT"
    found = store.find_installation(enterprise_id=None, team_id="T0NHS")
    assert found is not None and found.bot_token == NHS_TOKEN and found.team_name == "NHS Trust"
    assert store.find_bot(enterprise_id=None, team_id="T0SCHOOL") is None
    assert [
        (w.team_id, w.team_name, w.scopes) for w in installed_workspaces(engine, CLIENT_ID)
    ] == [
        ("T0NHS", "NHS Trust", "chat:write,im:write"),
        ("T0POLICE", "Police", "chat:write,im:write"),
    ]
    # Another app's installations are not ours.
    assert installed_workspaces(engine, "9999.9999") == []


def test_uninstalling_deletes_the_workspace_and_only_it(engine: Engine) -> None:
    store = EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD))
    store.save(installation("T0POLICE", POLICE_TOKEN, "Police"))
    store.save(installation("T0NHS", NHS_TOKEN, "NHS Trust"))

    store.delete_all(enterprise_id=None, team_id="T0POLICE")  # app_uninstalled

    assert store.find_bot(enterprise_id=None, team_id="T0POLICE") is None
    assert store.find_installation(enterprise_id=None, team_id="T0POLICE") is None
    assert [w.team_id for w in installed_workspaces(engine, CLIENT_ID)] == ["T0NHS"]


def test_rekey_moves_every_token_to_the_new_key_in_one_transaction(engine: Engine) -> None:
    EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD)).save(
        installation("T0POLICE", POLICE_TOKEN, "Police")
    )
    before = stored_tokens(engine)
    # Mid-rollout the new key is first and the old still opens what is stored.
    both = EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(f"{NEW},{OLD}"))
    assert both.find_bot(enterprise_id=None, team_id="T0POLICE").bot_token == POLICE_TOKEN

    assert rekey(engine, TokenCipher(f"{NEW},{OLD}")) == 2

    after = stored_tokens(engine)
    assert set(after).isdisjoint(before)
    new_only = EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(NEW))
    assert new_only.find_bot(enterprise_id=None, team_id="T0POLICE").bot_token == POLICE_TOKEN
    with pytest.raises(TokenKeyError):
        EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD)).find_bot(
            enterprise_id=None, team_id="T0POLICE"
        )


def test_rekey_without_the_old_key_changes_nothing(engine: Engine) -> None:
    EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD)).save(
        installation("T0POLICE", POLICE_TOKEN, "Police")
    )
    before = stored_tokens(engine)
    with pytest.raises(TokenKeyError):
        rekey(engine, TokenCipher(NEW))
    assert stored_tokens(engine) == before


def test_a_state_is_consumed_once_and_not_after_it_expires(engine: Engine) -> None:
    states = OAuthStateStore(engine)
    state = states.issue()
    assert states.consume(state) is True
    assert states.consume(state) is False
    assert states.consume("never-issued") is False

    stale = states.issue()
    with engine.begin() as conn:
        conn.execute(
            update(oauth_states_table)
            .where(oauth_states_table.c.state == stale)
            .values(expire_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1))
        )
    assert states.consume(stale) is False


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SLACK_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "cli-test-client-secret")
    monkeypatch.setenv("HANDOVER_PUBLIC_URL", "https://handover.example.gov.uk")
    monkeypatch.setenv("HANDOVER_TOKEN_KEY", OLD)
    return db_url


def test_the_cli_lists_workspaces_and_rekeys_them(
    cli_env: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert main(["workspaces", "list"]) == 0
    assert capsys.readouterr().out == "no partner workspace has installed the app\n"
    EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD)).save(
        installation("T0POLICE", POLICE_TOKEN, "Police")
    )
    assert main(["workspaces", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("T0POLICE\tPolice\tU0POLICEBOT\tchat:write,im:write\tinstalled ")
    assert POLICE_TOKEN not in listed

    # A key that opens nothing stored: exit 1, nothing changed, no key or token printed.
    monkeypatch.setenv("HANDOVER_TOKEN_KEY", NEW)
    before = stored_tokens(engine)
    assert main(["workspaces", "rekey"]) == 1
    err = capsys.readouterr().err
    assert "opens under no key" in err and "nothing was changed" in err and NEW not in err
    assert stored_tokens(engine) == before

    monkeypatch.setenv("HANDOVER_TOKEN_KEY", f"{NEW},{OLD}")
    assert main(["workspaces", "rekey"]) == 0
    assert (
        capsys.readouterr().out
        == "re-encrypted the tokens of 2 stored row(s) under the first key\n"
    )
    store = EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(NEW))
    assert store.find_bot(enterprise_id=None, team_id="T0POLICE").bot_token == POLICE_TOKEN


def test_the_cli_refuses_workspaces_without_oauth_settings(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    for name in ("SLACK_CLIENT_ID", "HANDOVER_TOKEN_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["workspaces", "list"]) == 1
    assert "partner workspaces need SLACK_CLIENT_ID" in capsys.readouterr().err
    assert main(["workspaces", "rekey"]) == 1
    assert "HANDOVER_TOKEN_KEY is not set" in capsys.readouterr().err


def test_the_cli_removes_the_app_from_a_workspace(
    cli_env: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    from bot.slack_standin import SlackStandIn, StandInUser

    with SlackStandIn(
        rate_limit=None, client_id=CLIENT_ID, client_secret="cli-test-client-secret"
    ) as standin:
        standin.add_workspace(
            "T0POLICE", users=[StandInUser(id="U0PC", name="pc")], token=POLICE_TOKEN
        )
        monkeypatch.setenv("SLACK_API_URL", standin.url)
        store = EncryptedInstallationStore(CLIENT_ID, engine, TokenCipher(OLD))
        store.save(installation("T0POLICE", POLICE_TOKEN, "Police"))

        assert main(["workspaces", "remove", "t0police"]) == 1
        assert "is not a Slack workspace (team) ID" in capsys.readouterr().err
        assert main(["workspaces", "remove", "T0SCHOOL"]) == 1
        assert "not installed in workspace T0SCHOOL" in capsys.readouterr().err

        assert main(["workspaces", "remove", "T0POLICE"]) == 0
        assert capsys.readouterr().out == (
            "removed the app from workspace T0POLICE and deleted its tokens\n"
        )
        [uninstall] = standin.calls("apps.uninstall")
        assert uninstall.team_id == "T0POLICE"
        with pytest.raises(SlackApiError):
            WebClient(base_url=standin.url, token=POLICE_TOKEN).auth_test()
        assert store.find_bot(enterprise_id=None, team_id="T0POLICE") is None
        assert stored_tokens(engine) == []
