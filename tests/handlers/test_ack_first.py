"""Clicks and slash commands are acknowledged before any database work (handlers/deferred.py).

The database is stalled in-process: every statement waits at a gate until the test opens it.
The HTTP answer must come back while the gate is shut, and no statement may have come from
the threads that answer requests; the work then runs on the queue once the gate opens. Each
test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import OnCallAcknowledgement, Response
from handlers import ids
from tests.handlers.slack_payloads import (
    Harness,
    Scenario,
    block_actions,
    running_bot,
    slack_user,
    wait_for,
)
from tests.handlers.test_oncall_ack import click, send_alert


class Gate:
    """Holds every SQL statement on `engine` while shut; notes the thread each came from."""

    def __init__(self, engine: Engine) -> None:
        self.opened = threading.Event()
        self.opened.set()
        self.threads: list[str] = []
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._wait)

    def _wait(self, *_args: object) -> None:
        if self.opened.is_set():
            return
        with self._lock:
            self.threads.append(threading.current_thread().name)
        self.opened.wait(timeout=30)

    def shut(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate(engine: Engine) -> Iterator[Gate]:
    gate = Gate(engine)
    yield gate
    gate.open()
    event.remove(engine, "before_cursor_execute", gate._wait)


@pytest.fixture
def bot(session_factory: sessionmaker[Session], gate: Gate) -> Iterator[Harness]:
    with running_bot(session_factory) as harness:
        yield harness


def test_a_click_is_acked_while_the_database_is_stalled_then_recorded(
    bot: Harness, scenario: Scenario, gate: Gate, session_factory: sessionmaker[Session]
) -> None:
    gate.shut()
    answer = bot.send_payload(
        block_actions(
            slack_user("hv-kpatel"), ids.ACK, str(scenario.prompt_id),
            channel_id=scenario.dm_channel, message_ts=scenario.dm_ts,
        )
    )  # fmt: skip
    assert (answer.status, answer.body) == (200, b"")
    # The work waits at the gate, on the queue's threads only: nothing ran before the ack.
    wait_for(lambda: gate.threads)
    assert {name.split("_")[0] for name in gate.threads} == {"slack-work"}, gate.threads
    assert bot.calls("chat.update") == []
    gate.open()
    wait_for(lambda: bot.calls("chat.update"))
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 1


def test_a_slash_command_is_acked_while_the_database_is_stalled_then_answered(
    bot: Harness, scenario: Scenario, gate: Gate
) -> None:
    gate.shut()
    answer, url = bot.send_command(slack_user("edt-mgr"), "oncall")
    assert (answer.status, answer.body) == (200, b"")
    wait_for(lambda: gate.threads)
    assert {name.split("_")[0] for name in gate.threads} == {"slack-work"}, gate.threads
    assert bot.catcher.answers(url) == []
    gate.open()
    [reply] = wait_for(lambda: bot.catcher.answers(url))
    assert reply["response_type"] == "ephemeral"
    assert "on call" in reply["text"].lower()


def test_an_on_call_acknowledgement_is_acked_while_the_database_is_stalled_then_recorded(
    bot: Harness, gate: Gate, session_factory: sessionmaker[Session]
) -> None:
    alert = send_alert(bot, session_factory)
    gate.shut()
    click(bot, alert, slack_user("edt-bob"), holder_index=1)  # asserts the 200
    wait_for(lambda: gate.threads)
    assert {name.split("_")[0] for name in gate.threads} == {"slack-work"}, gate.threads
    assert bot.calls("chat.update") == []
    gate.open()
    wait_for(lambda: len(bot.calls("chat.update")) == 2)
    with session_factory() as session:
        [ack] = session.scalars(select(OnCallAcknowledgement)).all()
        assert ack.person_id == "edt-bob"
