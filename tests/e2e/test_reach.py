"""Nobody silently dropped, end to end: `handover serve` and `handover dispatch` as processes at
the default settings, the Slack stand-in and the local mail relay.

Jo Smith's Slack account is not one the workspace knows and the rota has no email for her; her
team leader, Morgan Lee, is on NHSmail only. A referral for Jo at 10:00 on a Monday goes at once
to her deputy, Kiran Patel, and the on-call EDT manager is told Jo could not be reached. Nobody
answers: the +120 escalation reaches Morgan by email, and the +240 post in the escalation
channel names Jo as not reached instead of claiming she was asked.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.mail_standin import MailStandIn
from bot.settings import DEFAULT_DISPATCH_INTERVAL_SECONDS
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import ESCALATION_CHANNEL, SAMPLE_ROTA, Deployment, slack_user_of, wait_for

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
MONDAY_1000 = datetime(2026, 11, 16, 10, 0, tzinfo=LONDON)
UNKNOWN_TO_SLACK = "U0NOSUCH01"
MORGAN = "morgan.lee@nhsmail.example"


@pytest.fixture
def relay() -> Iterator[MailStandIn]:
    with MailStandIn() as relay:
        yield relay


def edited_rota(folder: Path) -> Path:
    """The sample rota, with Jo unknown to Slack and no email, Morgan on email only, and Raj on
    call as EDT manager all Monday."""
    rota = folder / "rota"
    shutil.copytree(SAMPLE_ROTA, rota)
    people = rota / "people.csv"
    with people.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["person_id"] == "hv-jsmith":
            row["slack_user"], row["email"] = UNKNOWN_TO_SLACK, ""
        if row["person_id"] == "hv-mgr-lee":
            row["slack_user"], row["email"] = "", MORGAN
    with people.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with (rota / "shifts.csv").open("a", encoding="utf-8") as handle:
        handle.write("edt-mgr-raj,edt_manager,2026-11-16T09:00,2026-11-16T17:00\n")
    return rota


def events(deployment: Deployment, referral_id: str, name: str) -> list[dict]:
    return [e for e in deployment.log(referral_id) if e["event"] == name]


def step_of(message: dict) -> str:
    metadata = message.get("metadata") or {}
    payload = metadata.get("event_payload") or {}
    return payload.get("step") or payload.get("kind") or metadata.get("event_type", "")


def dispatch_at(deployment: Deployment, instant: datetime) -> None:
    """Move the clock, and run a dispatcher pass as a process of its own."""
    deployment.set_clock(instant)
    deployment.run("dispatch", "--once")
    deployment.settle()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_unknown_recipient_passes_to_the_deputy_and_the_escalation_reaches_email_only(
    backend: str, new_deployment: DeploymentFactory, relay: MailStandIn, tmp_path: Path
) -> None:
    deployment = new_deployment(backend, MONDAY_1000)
    deployment.run("rota", "import", str(edited_rota(tmp_path)))
    deployment.extra_env.update(
        HANDOVER_DISPATCH_INTERVAL=str(DEFAULT_DISPATCH_INTERVAL_SECONDS),
        HANDOVER_SMTP_URL=relay.url,
        HANDOVER_MAIL_FROM="Handover <handover@wexcombe.example>",
        HANDOVER_PUBLIC_URL=deployment.base_url,
    )
    deployment.start_server()
    status, answer = deployment.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": "WXC-2026-009001",
            "category": "neglect",
            "urgency": "standard",
            "referrer": "edt-amy",
            "notify": ["person:hv-jsmith"],
            "summary": "SECRET-NARRATIVE never leaves the database",
        },
    )
    assert status == 201, answer
    referral_id = answer["referral_id"]
    assert answer["plan"][0]["recipient"] == "hv-jsmith"
    dispatch_at(deployment, MONDAY_1000)

    # At once: Jo is passed over for Kiran, her deputy; Raj, on call, hears of it.
    kiran, raj = slack_user_of("hv-kpatel"), slack_user_of("edt-mgr-raj")
    [prompt] = wait_for(
        lambda: [m for m in deployment.standin.dm(kiran) if step_of(m) == "handover_prompt"]
    )
    assert "You receive this as deputy for `person:hv-jsmith`." in json.dumps(prompt["blocks"])
    [rerouted] = events(deployment, referral_id, "prompt_rerouted")
    assert (rerouted["recipient"], rerouted["at"]) == ("hv-kpatel", "2026-11-16T10:00:00+00:00")
    assert rerouted["detail"]["from"] == "hv-jsmith"
    assert rerouted["detail"]["via"] == "deputy"
    assert rerouted["detail"]["error"] in ("user_not_found", "channel_not_found")
    [unreachable] = events(deployment, referral_id, "unreachable")
    assert (unreachable["recipient"], unreachable["target"]) == ("hv-jsmith", "person:hv-jsmith")
    assert unreachable["at"] == "2026-11-16T10:00:00+00:00"
    assert unreachable["detail"]["alerted"] == ["edt-mgr-raj"]
    [sent] = events(deployment, referral_id, "prompt_sent")
    assert (sent["recipient"], sent["at"]) == ("hv-kpatel", "2026-11-16T10:00:00+00:00")
    alarms = [m for m in deployment.standin.dm(raj) if step_of(m) == "unreachable"]
    [alarm] = alarms
    assert alarm["text"] == f"Handover referral {referral_id}: someone could not be reached"
    body = json.dumps(alarm["blocks"])
    assert "`hv-jsmith` could not be reached by Slack for target `person:hv-jsmith`" in body
    assert "The prompt went to `hv-kpatel` instead." in body

    # Nobody answers. +60: Kiran is reminded; +120: Morgan, email only, is escalated to by email.
    dispatch_at(deployment, MONDAY_1000.replace(hour=11))
    assert [step_of(m) for m in deployment.standin.dm(kiran)] == ["handover_prompt", "remind"]
    dispatch_at(deployment, MONDAY_1000.replace(hour=12))
    [mail] = wait_for(lambda: relay.messages(to=MORGAN))
    assert mail.email["Subject"].startswith(f"Handover referral {referral_id}")
    escalated = {e["recipient"]: e["detail"] for e in events(deployment, referral_id, "escalated")}
    assert escalated["hv-mgr-lee"]["delivered"] is True
    assert escalated["hv-mgr-lee"]["channel"] == "email"
    assert escalated["hv-mgr-lee"]["unreachable_on"] == {"slack": "users_not_found"}

    # +240: the escalation channel is told who was escalated to, and who could not be reached.
    dispatch_at(deployment, MONDAY_1000.replace(hour=14))
    [post] = [
        m
        for m in deployment.standin.channel(ESCALATION_CHANNEL)
        if step_of(m) == "escalate_channel"
    ]
    text = json.dumps(post["blocks"])
    assert "Escalated already to `hv-mgr-lee`." in text
    assert "Could not be reached: `hv-jsmith`. Please contact them another way." in text
    assert UNKNOWN_TO_SLACK not in text
    assert "SECRET-NARRATIVE" not in deployment.standin.all_text()
    assert all("SECRET-NARRATIVE" not in m.raw.decode("utf-8", "replace") for m in relay.messages())
