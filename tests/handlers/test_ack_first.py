"""Clicks and slash commands are acknowledged before any database work (handlers/deferred.py).

The database is stalled in-process: every statement waits at a gate until the test opens it.
The HTTP answer must come back while the gate is shut, and no statement may have come from
the threads that answer requests; once the gate opens, a click's job is written and run
(bot/slackjobs/), as is a slash command's. Each test runs on SQLite and PostgreSQL.

Bolt answers Slack when a listener returns (bot/web/app.py), so what a listener asks of Slack
after its ack waits for the answer too: the stand-in holds that call, and the answer must come
back while it is held.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import OnCallAcknowledgement, Response
from handlers import ids
from handlers.blocks.response import ACTION_CONTACT_BY
from tests.handlers.slack_payloads import (
    Harness,
    Scenario,
    app_home_opened,
    block_actions,
    has_info_values,
    running_bot,
    sign,
    slack_user,
    wait_for,
)
from tests.handlers.test_oncall_ack import click, send_alert

# The threads that may meet the database after an ack: the in-memory queue's (a modal's
# opening) and, for a click or a slash command, the slack_jobs writer's and runner's.
AFTER_ACK_THREADS = {"slack-work", "handover-job-writer", "handover-slack-jobs"}


def after_ack_only(threads: list[str]) -> bool:
    """Whether every thread named is one of the work after the ack (none answers requests)."""
    return {name.split("_")[0].rstrip("0123456789").rstrip("-") for name in threads} <= (
        AFTER_ACK_THREADS
    )


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
    # The job's write waits at the gate, on the writer's thread (after its 20 ms for others to
    # join the batch; a runner's look may come first): nothing ran before the ack.
    wait_for(lambda: "handover-job-writer" in gate.threads)
    assert after_ack_only(gate.threads), gate.threads
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
    # A slash command's work is a job: its write waits at the gate, on the writer's thread.
    wait_for(lambda: "handover-job-writer" in gate.threads)
    assert after_ack_only(gate.threads), gate.threads
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
    wait_for(lambda: "handover-job-writer" in gate.threads)
    assert after_ack_only(gate.threads), gate.threads
    assert bot.calls("chat.update") == []
    gate.open()
    wait_for(lambda: len(bot.calls("chat.update")) == 2)
    with session_factory() as session:
        [ack] = session.scalars(select(OnCallAcknowledgement)).all()
        assert ack.person_id == "edt-bob"


def test_the_work_makes_way_for_slack_requests_but_a_modal_opens_at_once(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    def press(action_id: str) -> None:
        answer = bot.send_payload(
            block_actions(
                slack_user("hv-kpatel"), action_id, str(scenario.prompt_id),
                channel_id=scenario.dm_channel, message_ts=scenario.dm_ts,
            )
        )  # fmt: skip
        assert (answer.status, answer.body) == (200, b"")

    with bot.services.slack_traffic.serving():  # Slack's requests never pause
        # "I hold information" opens a modal: its trigger_id lasts 3 s, so it does not wait.
        press(ids.HAS_INFO)
        [opened] = wait_for(lambda: bot.calls("views.open"))
        assert opened.args["view"]["callback_id"] == ids.HAS_INFO_MODAL
        # Acknowledge's work waits for a pause (bot/web/work.py: at most YIELD_SECONDS).
        press(ids.ACK)
        time.sleep(0.3)
        assert bot.calls("chat.update") == []
        with session_factory() as session:
            assert session.scalar(select(func.count()).select_from(Response)) == 0
    wait_for(lambda: bot.calls("chat.update"))
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 1


def open_home(bot: Harness, user: str, event_id: str) -> None:
    body = json.dumps(app_home_opened(event_id, user)).encode()
    answer = bot.post(body, "application/json", sign(body))
    assert (answer.status, answer.body) == (200, b"")


def test_app_home_opened_is_answered_then_the_home_drawn_by_the_work_after_the_acks(
    bot: Harness, scenario: Scenario, engine: Engine
) -> None:
    bot.services.homes.drain(timeout=10)  # the prompts' own redraws are done
    drawn = len(bot.calls("views.publish"))
    threads: list[str] = []

    def note(*_args: object) -> None:
        threads.append(threading.current_thread().name)

    event.listen(engine, "before_cursor_execute", note)
    try:
        open_home(replace(bot, over_http=False), slack_user("hv-kpatel"), "Ev0THREADS01")
        answered = threading.current_thread().name  # Bolt's dispatch ran here
        wait_for(lambda: len(bot.calls("views.publish")) > drawn)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    # The event's record (its dedupe) is written before the answer; the Home is read after it,
    # on the queue of the work after the acks, not on threads of Bolt's own.
    drawing = [name for name in threads if name != answered]
    assert drawing and after_ack_only(drawing), threads
    assert bot.calls("views.publish")[-1].args["user_id"] == slack_user("hv-kpatel")


def test_slack_is_answered_before_the_slack_calls_its_listener_asks_for(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    professional = slack_user("hv-kpatel")
    bot.standin.hold("views.publish", seconds=30)
    open_home(bot, professional, "Ev0HELD00001")
    wait_for(lambda: bot.standin.held())
    # A modal's submission: the response is recorded before the answer, the prompt's message
    # updated after it.
    answer = bot.send_payload(
        block_actions(
            professional, ids.HAS_INFO, str(scenario.prompt_id),
            channel_id=scenario.dm_channel, message_ts=scenario.dm_ts,
        )
    )  # fmt: skip
    assert answer.status == 200
    [opened] = wait_for(lambda: bot.calls("views.open"))
    view = opened.args["view"]
    blocks = [b.get("element", {}) for b in view["blocks"]]
    slots = next(e for e in blocks if e.get("action_id") == ACTION_CONTACT_BY)["options"]
    bot.standin.hold("chat.update", seconds=30)
    answer = bot.submit_view(professional, view, has_info_values(slots[-1]["value"]))
    assert (answer.status, answer.body) == (200, b"")
    held = wait_for(lambda: len(bot.standin.held()) == 2 and bot.standin.held())
    assert [(h["method"], h["released"]) for h in held] == [
        ("views.publish", False),
        ("chat.update", False),
    ]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 1
    assert bot.standin.release_holds() == 2
    wait_for(lambda: bot.calls("chat.update") and bot.calls("views.publish"))
