"""A dispatcher frozen (SIGSTOP) past its claim in the middle of a delivery, on PostgreSQL with
two real `handover dispatch` processes (tests/chaos/overrun_scenario.py): once while posting a
prompt, once while posting a reminder. The other dispatcher takes the rows over and sends
them; the frozen one's late copy, landing in Slack after it, is deleted. In the end every
prompt, alert, card and escalation message is in Slack exactly once, and logged once.

The auditor's finding (issue 14): 11 rounds of SIGSTOP mid-delivery left 5 prompts and 1
escalation DM'd twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.chaos.overrun_scenario import Overruns, copies_by_row
from tests.e2e.harness import DeploymentFactory, slack_user_of

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

LONDON = ZoneInfo("Europe/London")
TUESDAY_10 = datetime(2026, 12, 29, 10, 0, tzinfo=LONDON)  # an ordinary working morning
# Jo Smith is on leave: her deputy Kiran Patel is prompted; Tessa Ward herself; the team's
# duty holder or manager for team:hv-north.
TARGETS = ["person:hv-jsmith", "person:prob-tward", "team:hv-north"]


def test_a_dispatcher_frozen_past_its_claim_doubles_nothing(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("postgresql", TUESDAY_10)
    deployment.start_server("--no-dispatcher")
    overruns = Overruns(deployment)
    referral: dict = {}

    def post_referral() -> None:
        status, answer = deployment.api(
            "POST",
            "/api/referrals",
            {
                "external_ref": "LCS-2026-OVERRUN",
                "category": "neglect",
                "urgency": "standard",
                "referrer": "edt-ben",
                "notify": TARGETS,
                "summary": "OVERRUN-SUMMARY never leaves the bot",
            },
        )
        assert status == 201, answer
        referral.update(answer)

    # 1. Frozen while posting Kiran Patel's prompt.
    overruns.round(slack_user_of("hv-kpatel"), post_referral)
    plan = {entry["target"]: entry for entry in referral["plan"]}
    assert plan["person:hv-jsmith"]["recipient"] == "hv-kpatel"
    assert all(entry["immediate"] for entry in plan.values())

    # 2. Frozen while posting Tessa Ward's reminder (+60 working minutes from her prompt, which
    # the second dispatcher sent after the first froze).
    overruns.round(
        slack_user_of("prob-tward"),
        lambda: deployment.set_clock(TUESDAY_10 + timedelta(hours=1, minutes=2)),
    )

    # Then the escalations, +120 working minutes, by the dispatcher left running.
    deployment.advance(TUESDAY_10 + timedelta(hours=2, minutes=3), timeout=60)
    overruns.stop()
    report = overruns.report

    assert report.rounds == 2 and len(report.deleted) == 2
    copies = copies_by_row(deployment)
    assert {row: n for row, n in copies.items() if n != 1} == {}  # nothing doubled
    kinds = {event_type for event_type, _ in copies}
    assert {"handover_prompt", "handover_card", "handover_escalation"} <= kinds
    prompts = deployment.prompt_ids(referral["referral_id"])
    assert len(prompts) == len(TARGETS)
    assert {state for _, state, _ in prompts.values()} == {"sent"}
    assert {row for kind, row in copies if kind == "handover_prompt"} == set(prompts)

    log = deployment.log(referral["referral_id"])
    sent = [e for e in log if e["event"] in ("prompt_sent", "prompt_sent_late")]
    assert sorted(e["detail"]["prompt_id"] for e in sent) == sorted(prompts)
    reminders = [e for e in log if e["event"] == "reminder_sent"]
    assert len(reminders) == len(TARGETS)
    assert all(e["detail"]["delivered"] for e in reminders)
    assert any(e["detail"]["delivered"] for e in log if e["event"] == "escalated")
    deleted = [e for e in log if e["event"] == "duplicate_deleted"]
    assert [(e["detail"]["kind"], e["detail"]["ts"]) for e in deleted] == [
        ("prompt", report.deleted[0]),
        ("step_message", report.deleted[1]),
    ]
    assert [e["recipient"] for e in deleted] == ["hv-kpatel", "prob-tward"]
    assert all(e["detail"]["kept_ts"] != e["detail"]["ts"] for e in deleted)
    assert "OVERRUN-SUMMARY" not in deployment.standin.all_text()
    print(
        f"{report.rounds} freezes ({', '.join(f'{s:.1f} s' for s in report.freeze_seconds)} "
        f"real time), {len(report.deleted)} late copies deleted, 0 doubled"
    )
