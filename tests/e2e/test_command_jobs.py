"""A `/handover` subcommand's work after its ack is a job in the slack_jobs table
(handlers/command_jobs.py), end to end: a signed `/handover close REFERRAL_ID REASON` to the
processes of the Procfile (`serve --no-dispatcher`, `handover dispatch`) or `serve` alone,
the web process killed (`kill -9`) after the ack and before any process ran the job. After the
restart the referral is closed once, its held prompt cancelled, the user answered once, and the
job's row keeps nothing of the reason or the response_url. And a subcommand's answer reaches
its response_url within 2 s of the ack, as a click's update does. At the default settings.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import Deployment, slack_user_of, wait_for
from tests.e2e.test_click_jobs import (
    CLICK_BOUND_SECONDS,
    EVERY_LAYOUT,
    jobs,
    restart,
    running_bot,
    web_and_worker,
)
from tests.e2e.test_timing import referral

pytestmark = pytest.mark.slow

AMY = slack_user_of("edt-amy")
REASON = "Duplicate of LCS-9 for child REASON-NARRATIVE-77"


def events(deployment: Deployment, referral_id: str, name: str) -> list[dict]:
    return [e for e in deployment.log(referral_id) if e["event"] == name]


@pytest.mark.parametrize(
    ("backend", "restarted_as"), [("postgresql", "worker"), ("sqlite", "serve alone")]
)
def test_a_close_acked_before_the_web_process_is_killed_is_carried_out_once_after_the_restart(
    new_deployment: DeploymentFactory, backend: str, restarted_as: str
) -> None:
    deployment, web, worker = web_and_worker(new_deployment, backend)
    # hv-kpatel (hv-jsmith's deputy) works from Tuesday 09:00: the prompt is held until then.
    status, answer = deployment.api(
        "POST", "/api/referrals", referral("LCS-CLOSE-1", ["person:hv-jsmith"])
    )
    assert status == 201, answer
    referral_id = answer["referral_id"]
    [(prompt_id, held)] = deployment.prompt_ids(referral_id).items()
    assert held == (referral_id, "pending", None)  # its recipient is chosen when it is due
    deployment.settle()
    deployment.kill(worker, signal.SIGTERM)  # no process runs jobs now

    status, _, name = deployment.slash_command(AMY, f"close {referral_id} {REASON}")
    assert status == 200
    # Acked, and written as a job: who typed it, where and when; privately, until its work has
    # used them, the response_url and the words typed.
    [(kind, state, attempts, payload)] = wait_for(lambda: jobs(deployment))
    assert (kind, state, attempts) == ("handover_command_close", "waiting", 0)
    private = json.loads(payload)["private"]
    assert private == {
        "response_url": deployment.standin.response_url(name),
        "args": [referral_id, *REASON.split()],
    }
    deployment.kill(web, signal.SIGKILL)
    [(status_before,)] = deployment.query(
        "SELECT status FROM referrals WHERE referral_id = :id", id=referral_id
    )
    assert status_before == "open" and deployment.standin.responses(name) == []

    restart(deployment, restarted_as)
    wait_for(lambda: events(deployment, referral_id, "referral_closed"), timeout=20)
    wait_for(lambda: deployment.standin.responses(name))
    time.sleep(2.0)  # anything done twice would show by now

    [closed] = events(deployment, referral_id, "referral_closed")
    assert closed["actor"] == "edt-amy"
    [cancelled] = events(deployment, referral_id, "prompt_cancelled")
    assert (cancelled["recipient"], cancelled["target"]) == ("hv-kpatel", "person:hv-jsmith")
    assert deployment.prompt_ids(referral_id) == {prompt_id: (referral_id, "cancelled", None)}
    [(cancelled_rows,)] = deployment.query(
        "SELECT count(*) FROM outbox WHERE referral_id = :id AND state = 'cancelled'",
        id=referral_id,
    )
    assert cancelled_rows == 5  # the prompt, its reminder and escalations, and the like
    [(pending,)] = deployment.query(
        "SELECT count(*) FROM outbox WHERE referral_id = :id AND state = 'pending' "
        "AND kind <> 'card'",
        id=referral_id,
    )
    assert pending == 0
    [response] = deployment.standin.responses(name)
    assert response["body"]["response_type"] == "ephemeral"
    assert response["body"]["text"] == (
        f"Referral {referral_id} is closed. Cancelled 1 prompt(s) still held and 4 other "
        "pending message(s). The reason is kept with the referral (never in Slack or the log)."
    )
    [(kind, state, attempts, payload)] = jobs(deployment)
    assert (kind, state, attempts) == ("handover_command_close", "done", 1)
    assert set(json.loads(payload)) == {"user", "workspace", "channel", "issued_at"}
    [(reason,)] = deployment.query(
        "SELECT close_reason FROM referrals WHERE referral_id = :id", id=referral_id
    )
    assert reason == REASON
    for typed in ("REASON-NARRATIVE-77", "kept for the record"):
        assert typed not in deployment.standin.all_text()


@EVERY_LAYOUT
def test_a_subcommands_answer_reaches_slack_within_2_s_of_its_ack(
    new_deployment: DeploymentFactory, backend: str, processes: str
) -> None:
    deployment = running_bot(new_deployment, backend, processes)
    deployment.settle()
    time.sleep(1.0)  # the runners are idle: only a wake-up brings them

    status, _, name = deployment.slash_command(AMY, "oncall edt_manager")
    acked = time.time()
    assert status == 200
    [response] = wait_for(lambda: deployment.standin.responses(name), timeout=10)
    delay = response["timestamp"] - acked
    assert delay < CLICK_BOUND_SECONDS, delay
    assert response["body"]["response_type"] == "ephemeral"
    assert response["body"]["text"].startswith("*On call at ")
    assert "`edt_manager`" in response["body"]["text"]
