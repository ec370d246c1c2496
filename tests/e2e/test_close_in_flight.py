"""A referral closed with `/handover close` while its prompt's post is on its way to Slack
(docs/timing.md, "Cancelled in a batch"), with `handover serve` as a process, on SQLite and
PostgreSQL; and the same with the dispatcher sending it killed (SIGKILL) before it records the
send, when a second dispatcher finds the prompt in the DM once the dead one's lease has ended
and logs it sent, once, saying it was cancelled, with nothing following from it.

The Slack stand-in holds the prompt's `chat.postMessage` before it takes effect (a `hold`
fault): the dispatcher has passed its claim check, so the post cannot be stopped. The referrer
closes the referral meanwhile. The prompt then lands once, the log says it was cancelled in the
batch and then sent, nothing follows from it, and the card shows the close.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.delivery.outbox import DEFAULT_LEASE
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import EDT_CHANNEL, Deployment, slack_user_of, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite", "postgresql"])]

SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=ZoneInfo("Europe/London"))
AMY = slack_user_of("edt-amy")


def closed_while_its_prompt_is_held(
    deployment: Deployment, external_ref: str, summary: str
) -> tuple[str, str, str]:
    """A referral for the police DAU's officer posted, its prompt's post held at the stand-in
    once the dispatcher has passed its claim check, and the referral closed by Amy meanwhile:
    (referral_id, the officer's person_id, their Slack user)."""
    standin = deployment.standin
    [planned] = json.loads(
        deployment.run(
            "plan", "--notify", "role:police_dau", "--at", SATURDAY.isoformat(), "--format", "json"
        ).stdout
    )["plan"]
    officer = slack_user_of(planned["recipient"])
    standin.inject(
        {"kind": "hold", "method": "chat.postMessage", "channel": officer, "seconds": 120}
    )

    status, answer = deployment.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": external_ref,
            "category": "neglect",
            "urgency": "standard",
            "referrer": "edt-amy",
            "notify": ["role:police_dau"],
            "summary": summary,
        },
    )
    assert status == 201, (status, answer)
    referral_id = answer["referral_id"]
    wait_for(lambda: standin.get("holds")["held"], timeout=30)

    status, _, name = deployment.slash_command(AMY, f"close {referral_id} Duplicate of LCS-9")
    assert status == 200
    wait_for(lambda: standin.responses(name), timeout=30)
    return referral_id, planned["recipient"], officer


def prompts_in_slack(deployment: Deployment, officer: str, referral_id: str) -> list[dict]:
    """The referral's prompts in the officer's DM."""
    return [
        m
        for m in deployment.standin.dm(officer)
        if m["metadata"]["event_type"] == "handover_prompt"
        and m["metadata"]["event_payload"]["referral_id"] == referral_id
    ]


@pytest.fixture
def deployment(new_deployment: DeploymentFactory, backend: str) -> Deployment:
    """A deployment on `backend` at 02:10 on a Saturday (nobody but on-call at work)."""
    return new_deployment(backend, SATURDAY)


def test_a_prompt_on_its_way_when_the_referral_closes_is_sent_once_and_logged_truthfully(
    deployment: Deployment,
) -> None:
    standin = deployment.standin
    deployment.start_server()
    referral_id, recipient, officer = closed_while_its_prompt_is_held(
        deployment, "LCS-CLOSE-IN-FLIGHT", "SUMMARY-CLOSE-4410"
    )
    standin.post("holds/release", {})
    deployment.settle(timeout=60)

    prompts = prompts_in_slack(deployment, officer, referral_id)
    assert len(prompts) == 1
    [(prompt_id, (_, state, sent_to))] = deployment.prompt_ids(referral_id).items()
    assert (state, sent_to) == ("sent", recipient)

    log = deployment.log(referral_id)
    prompt_events = [
        (e["event"], e["detail"])
        for e in log
        if e["event"] in ("prompt_cancelled", "referral_closed", "prompt_sent", "prompt_sent_late")
    ]
    assert [event for event, _ in prompt_events] == [
        "prompt_cancelled",
        "referral_closed",
        "prompt_sent",
    ]
    assert prompt_events[0][1] == {
        "prompt_id": prompt_id,
        "reason": "referral closed",
        "in_batch": True,
    }
    sent = prompt_events[2][1]
    assert (sent["prompt_id"], sent["ts"], sent["cancelled_while_sending"]) == (
        prompt_id,
        prompts[0]["ts"],
        "referral closed",
    )
    # Nothing follows from it: no escalation step was scheduled.
    assert deployment.query(
        "SELECT count(*) FROM outbox WHERE referral_id = :r AND kind = 'escalation'", r=referral_id
    ) == [(0,)]
    [card] = [
        m
        for m in standin.channel(EDT_CHANNEL)
        if m["metadata"]["event_type"] == "handover_card"
        and m["metadata"]["event_payload"]["referral_id"] == referral_id
    ]
    assert f"{referral_id} (closed)" in json.dumps(card["blocks"])
    assert "SUMMARY-CLOSE-4410" not in standin.all_text()


def test_a_prompt_sent_by_a_dispatcher_killed_after_the_close_is_logged_once(
    deployment: Deployment,
) -> None:
    deployment.start_server("--no-dispatcher")
    dead = deployment.start("dispatch")
    standin = deployment.standin
    referral_id, _, officer = closed_while_its_prompt_is_held(
        deployment, "LCS-KILLED-IN-FLIGHT", "SUMMARY-KILLED-5520"
    )
    deployment.kill(dead, signal.SIGKILL)
    standin.post("holds/release", {})
    wait_for(lambda: not standin.get("holds")["held"], timeout=30)

    [posted] = prompts_in_slack(deployment, officer, referral_id)
    [(prompt_id, (_, state, _))] = deployment.prompt_ids(referral_id).items()
    assert state == "cancelled"

    def logged(*names: str) -> list[dict]:
        return [e for e in deployment.log(referral_id) if e["event"] in names]

    assert logged("prompt_sent", "prompt_sent_late") == []

    deployment.set_clock(SATURDAY + DEFAULT_LEASE + timedelta(seconds=5))
    deployment.start("dispatch")
    wait_for(lambda: logged("prompt_sent", "prompt_sent_late"), timeout=60)
    # Another pass or two, to see nothing more is written.
    deployment.set_clock(SATURDAY + DEFAULT_LEASE + timedelta(minutes=2))
    deployment.settle(timeout=60)

    assert [m["ts"] for m in prompts_in_slack(deployment, officer, referral_id)] == [posted["ts"]]
    assert deployment.prompt_ids(referral_id)[prompt_id][1] == "sent"
    events = [
        (e["event"], e["detail"])
        for e in logged("prompt_cancelled", "referral_closed", "prompt_sent", "prompt_sent_late")
    ]
    assert [event for event, _ in events] == ["prompt_cancelled", "referral_closed", "prompt_sent"]
    sent = events[2][1]
    assert (
        sent["prompt_id"],
        sent["ts"],
        sent["cancelled_while_sending"],
        sent["found_in_history"],
    ) == (prompt_id, posted["ts"], "referral closed", True)
    # Nothing follows from it: no escalation step was scheduled.
    assert deployment.query(
        "SELECT count(*) FROM outbox WHERE referral_id = :r AND kind = 'escalation'", r=referral_id
    ) == [(0,)]
    assert "SUMMARY-KILLED-5520" not in standin.all_text()
