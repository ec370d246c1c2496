"""Several bot processes on one PostgreSQL database: every prompt once, whatever Slack does.

`handover serve --no-dispatcher` takes the referrals; two `handover dispatch` processes share the
Tuesday-morning burst while the Slack stand-in answers with 429 storms and 5xx errors, some of
them after it has stored the message (the answer is lost, the DM is not).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import Deployment, wait_for

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
# Monday 28 December 2026 is the Boxing Day substitute bank holiday: EDT works all day.
BANK_HOLIDAY_EVENING = datetime(2026, 12, 28, 20, 0, tzinfo=LONDON)
TUESDAY_0900 = datetime(2026, 12, 29, 9, 0, tzinfo=LONDON)
REFERRALS = 60
# Four targets, each reaching someone whose working day starts at 09:00 on Tuesday.
TARGETS = ["person:hv-jsmith", "team:hv-north", "person:prob-tward", "team:probation-north"]
SUMMARY = "Child disclosed at the front desk; SUMMARY-BURST-{n:03d}"


def post_referral(deployment: Deployment, n: int) -> str:
    body: dict[str, Any] = {
        "external_ref": f"LCS-2026-{n:06d}",
        "category": "physical_abuse",
        "urgency": "standard",
        "referrer": "edt-ben",
        "notify": TARGETS,
        "summary": SUMMARY.format(n=n),
    }
    status, answer = deployment.api("POST", "/api/referrals", body)
    assert status == 201, (status, answer)
    assert [(e["due_at"], e["immediate"]) for e in answer["plan"]] == [
        ("2026-12-29T09:00:00+00:00", False)
    ] * len(TARGETS)
    return answer["referral_id"]


def sent_by_each_dispatcher(deployment: Deployment, total: int) -> list[int]:
    """Prompts each `handover dispatch` process reports having sent, from its own log, once they
    report `total` together: a pass logs what it sent when it is over, a moment after its rows
    are settled (all that `settle` waits for)."""

    def logged() -> list[int]:
        totals = []
        for path in sorted(deployment.workdir.glob("proc-*-dispatch.log")):
            text = path.read_text(errors="replace")
            totals.append(sum(int(n) for n in re.findall(r"dispatch: (\d+) prompts sent", text)))
        return totals

    try:
        wait_for(lambda: sum(logged()) >= total)
    except AssertionError:
        raise AssertionError(f"the dispatchers logged {logged()} prompts, not {total}") from None
    return logged()


def test_two_dispatchers_share_a_burst_of_240_prompts_through_429s_and_5xx_once_each(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("postgresql", BANK_HOLIDAY_EVENING)
    deployment.start_server("--no-dispatcher")
    dispatchers = [deployment.start("dispatch"), deployment.start("dispatch")]

    with ThreadPoolExecutor(max_workers=4) as pool:
        referral_ids = list(pool.map(lambda n: post_referral(deployment, n), range(REFERRALS)))
    assert len(set(referral_ids)) == REFERRALS
    deployment.settle()  # the on-call alerts and cards of Monday evening
    # Nobody acknowledges them: re-paged at 20:10 and posted to the EDT channel at 20:20, so
    # the faults below meet the Tuesday burst, not these.
    deployment.advance(datetime(2026, 12, 28, 20, 21, tzinfo=LONDON), timeout=90)
    assert deployment.standin.prompt_messages() == {}
    alerts_before = deployment.standin.prompt_messages(alerts=True)

    # During the burst Slack rate-limits, fails before storing, and fails after storing.
    deployment.standin.inject(
        {"kind": "ratelimit", "method": "chat.postMessage", "count": 4, "retry_after": 1},
        {"kind": "status", "method": "chat.postMessage", "status": 500, "count": 4},
        {"kind": "status", "method": "chat.postMessage", "status": 502, "count": 4,
         "after_apply": True},
        {"kind": "error", "method": "chat.postMessage", "error": "internal_error", "count": 2,
         "after_apply": True},
        {"kind": "ratelimit", "method": "chat.update", "count": 3, "retry_after": 1},
        {"kind": "status", "method": "chat.update", "status": 503, "count": 3},
    )  # fmt: skip
    deployment.advance(TUESDAY_0900, timeout=90)
    # Retries wait out their back-off in simulated time: 30 s, 1 min, 2 min, ...
    for minute in (1, 3, 7, 15):
        deployment.advance(datetime(2026, 12, 29, 9, minute, tzinfo=LONDON), timeout=60)
    assert deployment.standin.get("faults")["faults"] == []  # every fault was delivered

    for process in dispatchers:
        assert process.poll() is None, deployment.logs()
    rows = deployment.prompt_ids()
    assert len(rows) == REFERRALS * len(TARGETS)
    assert {state for _, state, _ in rows.values()} == {"sent"}
    dms = deployment.standin.prompt_messages()
    assert set(dms) == set(rows)
    duplicated = {prompt_id: len(m) for prompt_id, m in dms.items() if len(m) != 1}
    assert duplicated == {}
    # Each DM went to the recipient the row names, and the log says so once per prompt.
    sent = [
        e
        for e in deployment.log()
        if e["event"] in ("prompt_sent", "prompt_sent_late") and e["referral_id"] in referral_ids
    ]
    assert sorted(e["detail"]["prompt_id"] for e in sent) == sorted(rows)
    assert {e["recipient"] for e in sent} == {
        "hv-kpatel",
        "hv-mgr-lee",
        "prob-tward",
        "prob-mgr-walsh",
    }
    # The 429s went back to the outbox until their Retry-After (nothing waits inside a send)
    # and the 5xx rows until their back-off: those Slack had stored (502 and internal_error
    # after applying) were found, not reposted, and are logged as sent when Slack had them (at
    # 09:00); only the 4 refused and the 4 rate-limited went later, at 09:01.
    at_nine = [e for e in sent if e["at"] == "2026-12-29T09:00:00+00:00"]
    assert len(at_nine) == len(rows) - 8
    retried = [e for e in deployment.log() if e["event"] == "prompt_failed"]
    assert sorted(e["detail"]["reason"] for e in retried) == sorted(
        ["ratelimited"] * 4 + ["http_500"] * 4 + ["http_502"] * 4 + ["internal_error"] * 2
    )
    assert {e["detail"]["retry_at"] for e in retried if e["detail"]["reason"] == "ratelimited"} == {
        "2026-12-29T09:00:01+00:00"
    }
    found = [e for e in sent if e["detail"].get("found_in_history")]
    assert len(found) == 6
    assert {(e["event"], e["at"], e["detail"]["sent_at"]) for e in found} == {
        ("prompt_sent", "2026-12-29T09:00:00+00:00", "2026-12-29T09:00:00+00:00")
    }
    assert all(e["detail"]["found_at"] > "2026-12-29T09:00:00+00:00" for e in found)
    # Both dispatchers took part; together they sent each prompt once.
    per_dispatcher = sent_by_each_dispatcher(deployment, len(rows))
    assert len(per_dispatcher) == 2 and all(n > 0 for n in per_dispatcher), per_dispatcher
    assert sum(per_dispatcher) == len(rows)
    # Nothing of Monday evening was repeated, and no summary ever reached Slack.
    alerts_after = deployment.standin.prompt_messages(alerts=True)
    assert {k: len(v) for k, v in alerts_after.items() if k in alerts_before} == {
        k: len(v) for k, v in alerts_before.items()
    }
    assert "SUMMARY-BURST" not in deployment.standin.all_text()
