"""A click's work after its ack is a job in the slack_jobs table (bot/slackjobs/), end to end:
the processes of the Procfile (`serve --no-dispatcher` and `handover dispatch`) or `serve` alone,
the stand-in delivering signed clicks as Slack does, at the default settings.

- a click acked by a web process killed (`kill -9`) before its work ran is done after the
  restart, exactly once: by a `handover dispatch` worker, or by `serve` with its dispatcher;
- a click's message update reaches Slack within 2 s of the ack (docs/timing.md, "How fast").
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest

from handlers import ids
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import SIGNING_SECRET, Deployment, wait_for
from tests.e2e.test_timing import (
    POLICE_AHMED,
    SATURDAY,
    deploy_at_default_interval,
    referral,
    start_bot,
    start_dispatcher,
)

pytestmark = pytest.mark.slow

CLICK_BOUND_SECONDS = 2.0


def prompt_to_ahmed(deployment: Deployment) -> tuple[str, dict[str, Any]]:
    """A referral whose police prompt goes to pol-pc-ahmed at once: its id and the prompt.
    The stand-in delivers clicks to the app's Request URL, signed, as Slack does."""
    deployment.standin.post(
        "app",
        {"request_url": f"{deployment.base_url}/slack/events", "signing_secret": SIGNING_SECRET},
    )
    status, answer = deployment.api(
        "POST", "/api/referrals", referral("LCS-CLICK-1", ["role:police_dau"])
    )
    assert status == 201, answer
    [prompt] = wait_for(lambda: deployment.standin.dm(POLICE_AHMED))
    deployment.settle()
    return answer["referral_id"], prompt


def click(deployment: Deployment, prompt: dict[str, Any]) -> None:
    """pol-pc-ahmed clicks Acknowledge on the prompt; returns once the app has acked it."""
    envelope = deployment.standin.deliver(
        "click", user=POLICE_AHMED, action_id=ids.ACK, ts=prompt["ts"]
    )
    assert (envelope["via"], envelope["state"]) == ("http", "acked"), envelope


def updates_of(deployment: Deployment, prompt: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat.update calls made to the prompt's message."""
    return [
        call
        for call in deployment.standin.calls("chat.update")
        if call["args"].get("ts") == prompt["ts"] and (call["response"] or {}).get("ok")
    ]


def web_and_worker(
    new_deployment: DeploymentFactory, backend: str
) -> tuple[Deployment, subprocess.Popen, subprocess.Popen]:
    """The Procfile's processes at the default settings, Saturday 02:10 and running."""
    deployment = deploy_at_default_interval(new_deployment, backend)
    deployment.run_clock(SATURDAY)
    web = deployment.start_server("--no-dispatcher")
    return deployment, web, start_dispatcher(deployment)


def restart(deployment: Deployment, restarted_as: str) -> None:
    """Start the killed web process again: with a worker, or as `serve` alone."""
    if restarted_as == "worker":
        deployment.start_server("--no-dispatcher")
        start_dispatcher(deployment)
    else:
        deployment.start_server()


def jobs(deployment: Deployment) -> list[tuple]:
    return deployment.query("SELECT kind, state, attempts, payload FROM slack_jobs ORDER BY id")


def acknowledged(deployment: Deployment, referral_id: str) -> list[dict[str, Any]]:
    return [e for e in deployment.log(referral_id) if e["event"] == "acknowledged"]


@pytest.mark.parametrize(
    ("backend", "restarted_as"), [("postgresql", "worker"), ("sqlite", "serve alone")]
)
def test_a_click_acked_before_the_web_process_is_killed_is_done_once_after_the_restart(
    new_deployment: DeploymentFactory, backend: str, restarted_as: str
) -> None:
    deployment, web, worker = web_and_worker(new_deployment, backend)
    referral_id, prompt = prompt_to_ahmed(deployment)
    deployment.kill(worker, signal.SIGTERM)  # no process runs jobs now

    click(deployment, prompt)
    # Acked, and written as a job (who, which prompt, which message; not the message itself).
    [(kind, state, attempts, payload)] = wait_for(lambda: jobs(deployment))
    assert (kind, state, attempts) == (ids.ACK, "waiting", 0)
    assert "blocks" not in payload and prompt["text"] not in payload
    deployment.kill(web, signal.SIGKILL)
    assert updates_of(deployment, prompt) == [] and acknowledged(deployment, referral_id) == []

    restart(deployment, restarted_as)
    wait_for(lambda: acknowledged(deployment, referral_id), timeout=20)
    wait_for(lambda: updates_of(deployment, prompt))
    time.sleep(2.0)  # anything done twice would show by now
    [event] = acknowledged(deployment, referral_id)
    assert event["actor"] == "pol-pc-ahmed"
    assert len(updates_of(deployment, prompt)) == 1
    assert [(k, s, a) for k, s, a, _ in jobs(deployment)] == [(ids.ACK, "done", 1)]
    [(responses,)] = deployment.query("SELECT count(*) FROM responses")
    assert responses == 1


# Both layouts on both databases: `processes` for `running_bot`.
EVERY_LAYOUT = pytest.mark.parametrize(
    ("backend", "processes"),
    [
        ("postgresql", "serve and dispatch"),
        ("sqlite", "serve and dispatch"),
        ("postgresql", "serve alone"),
        ("sqlite", "serve alone"),
    ],
)


def running_bot(new_deployment: DeploymentFactory, backend: str, processes: str) -> Deployment:
    """The bot at the default settings, Saturday 02:10, in the layout `processes` names."""
    deployment = deploy_at_default_interval(new_deployment, backend)
    deployment.run_clock(SATURDAY)
    start_bot(deployment, processes)
    return deployment


@EVERY_LAYOUT
def test_a_clicks_message_update_reaches_slack_within_2_s_of_its_ack(
    new_deployment: DeploymentFactory, backend: str, processes: str
) -> None:
    deployment = running_bot(new_deployment, backend, processes)
    referral_id, prompt = prompt_to_ahmed(deployment)
    time.sleep(1.0)  # the runners are idle: only a wake-up brings them

    click(deployment, prompt)
    acked = time.time()
    [update] = wait_for(lambda: updates_of(deployment, prompt), timeout=10)
    delay = update["timestamp"] - acked
    assert delay < CLICK_BOUND_SECONDS, delay
    assert update["args"]["text"] == f"Handover referral {referral_id}: acknowledged"
    [event] = wait_for(lambda: acknowledged(deployment, referral_id))
    assert event["actor"] == "pol-pc-ahmed"
