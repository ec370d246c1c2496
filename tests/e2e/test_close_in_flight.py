"""A referral closed with `/handover close` while its prompt's post is on its way to Slack
(docs/timing.md, "Cancelled in a batch"), with `handover serve` as a process, on SQLite and
PostgreSQL.

The Slack stand-in holds the prompt's `chat.postMessage` before it takes effect (a `hold`
fault): the dispatcher has passed its claim check, so the post cannot be stopped. The referrer
closes the referral meanwhile. The prompt then lands once, the log says it was cancelled in the
batch and then sent, nothing follows from it, and the card shows the close.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import EDT_CHANNEL, slack_user_of, wait_for

pytestmark = pytest.mark.slow

SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=ZoneInfo("Europe/London"))
AMY = slack_user_of("edt-amy")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_prompt_on_its_way_when_the_referral_closes_is_sent_once_and_logged_truthfully(
    new_deployment: DeploymentFactory, backend: str
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    standin = deployment.standin
    deployment.start_server()
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
            "external_ref": "LCS-CLOSE-IN-FLIGHT",
            "category": "neglect",
            "urgency": "standard",
            "referrer": "edt-amy",
            "notify": ["role:police_dau"],
            "summary": "SUMMARY-CLOSE-4410",
        },
    )
    assert status == 201, (status, answer)
    referral_id = answer["referral_id"]
    wait_for(lambda: standin.get("holds")["held"], timeout=30)

    status, _, name = deployment.slash_command(AMY, f"close {referral_id} Duplicate of LCS-9")
    assert status == 200
    wait_for(lambda: standin.responses(name), timeout=30)
    standin.post("holds/release", {})
    deployment.settle(timeout=60)

    prompts = [
        m
        for m in standin.dm(officer)
        if m["metadata"]["event_type"] == "handover_prompt"
        and m["metadata"]["event_payload"]["referral_id"] == referral_id
    ]
    assert len(prompts) == 1
    [(prompt_id, (_, state, recipient))] = deployment.prompt_ids(referral_id).items()
    assert (state, recipient) == ("sent", planned["recipient"])

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
