"""What a council's operations team meets: /metrics after a weekend, JSON logs, LOG_LEVEL.

`handover serve` runs as a process against the Slack stand-in; the weekend is the core loop's
(a referral on Boxing Day night, prompts on Tuesday morning, nobody answering), and /metrics
is scraped over HTTP at the end and compared with `handover log`.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import HANDOVER, Deployment

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=LONDON)  # Boxing Day night
TUESDAY_0900 = datetime(2026, 12, 29, 9, 0, tzinfo=LONDON)
WEDNESDAY_0800 = datetime(2026, 12, 30, 8, 0, tzinfo=LONDON)
SUMMARY = "Baby seen with bruising; SUMMARY-OPS-5521"
JSON_KEYS = {"time", "level", "logger", "message"}


def scrape(deployment: Deployment) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{deployment.base_url}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def json_lines(deployment: Deployment, process_log: str) -> list[dict]:
    """The process's log as JSON objects; every other line must be one of its own prints."""
    records = []
    for line in (deployment.workdir / process_log).read_text().splitlines():
        if line.startswith("handover: "):  # what serve prints on stdout for a person
            continue
        record = json.loads(line)  # fails the test on any line that is not JSON
        assert record.keys() >= JSON_KEYS, record
        records.append(record)
    return records


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_metrics_after_a_weekend_match_the_log_and_the_log_lines_are_json(
    new_deployment: DeploymentFactory, backend: str
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    deployment.extra_env.update(HANDOVER_LOG_FORMAT="json", LOG_LEVEL="INFO")
    deployment.start_server()
    status, answer = deployment.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": "LCS-2026-OPS-1",
            "category": "neglect",
            "urgency": "standard",
            "referrer": "edt-amy",
            "notify": ["person:hv-jsmith", "team:gp-northgate", "role:police_dau"],
            "summary": SUMMARY,
        },
    )
    assert status == 201, answer
    deployment.settle()
    deployment.advance(TUESDAY_0900)
    deployment.advance(WEDNESDAY_0800)  # nobody answered: every step of escalation, breaches

    metrics = scrape(deployment)
    log = deployment.log()
    events = Counter(record["event"] for record in log)

    # The weekend did escalate and breach, and /metrics counts exactly what the log holds.
    assert events["reminder_sent"] >= 1 and events["breach"] >= 1
    for step in ("reminder_sent", "escalated", "escalated_channel"):
        assert metrics[("handover_escalations_total", (("step", step),))] == events[step], step
    assert metrics[("handover_breaches_total", ())] == events["breach"]
    for event, count in events.items():
        assert metrics[("handover_log_events_total", (("event", event),))] == count, event
    # Every prompt and on-call alert the log calls sent is a delivered send over Slack.
    delivered = {
        labels: value
        for (name, labels), value in metrics.items()
        if name == "handover_sends_total" and dict(labels)["outcome"].startswith("delivered")
    }
    # The clock jumped from Saturday to Tuesday 09:00: the GP practice's 08:00 prompt went an
    # hour late, and both /metrics and the log say so.
    assert events["prompt_sent_late"] == 1
    slack_prompt = (("channel", "slack"), ("kind", "prompt"))
    assert delivered[(*slack_prompt, ("outcome", "delivered"))] == events["prompt_sent"]
    assert delivered[(*slack_prompt, ("outcome", "delivered_late"))] == 1
    assert (
        delivered[(("channel", "slack"), ("kind", "on_call"), ("outcome", "delivered"))]
        == events["on_call_alerted"]
    )
    # Every delivered message is in the lateness histogram, its buckets cumulative.
    bucket = "handover_send_lateness_seconds_bucket"
    counts = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in metrics.items()
        if name == bucket and dict(labels)["channel"] == "slack"
    )
    assert [value for _, value in counts] == sorted(value for _, value in counts)
    assert counts[-1] == (float("inf"), sum(delivered.values()))
    slack = (("channel", "slack"),)
    assert metrics[("handover_send_lateness_seconds_count", slack)] == sum(delivered.values())
    # Nothing is left due; the outbox agrees with the database read directly.
    for (name, _labels), value in metrics.items():
        if name in ("handover_outbox_depth", "handover_outbox_oldest_due_age_seconds"):
            assert value == 0, name
    (waiting,) = deployment.query(
        "SELECT count(*) FROM outbox WHERE state IN ('pending', 'claimed') AND kind = 'prompt'"
    )
    assert metrics[("handover_outbox_scheduled", (("kind", "prompt"),))] == waiting[0]

    # The server's log: one JSON object a line, with the dispatcher's counts as fields and
    # never the referral's summary.
    records = json_lines(deployment, "proc-00-serve.log")
    assert any(r["message"].startswith("listening on http://") and r["port"] for r in records)
    passes = [r for r in records if r["logger"] == "bot.delivery.dispatcher" and "sent" in r]
    assert sum(r["sent"] for r in passes) == events["prompt_sent"] + events["prompt_sent_late"]
    assert all(r["level"] in ("INFO", "WARNING", "ERROR") for r in records)
    assert "SUMMARY-OPS" not in (deployment.workdir / "proc-00-serve.log").read_text()


def test_log_level_is_honoured_and_bad_values_stop_the_start(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", SATURDAY)
    env = {**deployment.env, "HANDOVER_LOG_FORMAT": "json"}

    # DEBUG shows what a pass claimed; WARNING leaves out the lines below it.
    def dispatch_once(level: str) -> list[dict]:
        result = subprocess.run(
            [*HANDOVER, "dispatch", "--once"],
            env={**env, "LOG_LEVEL": level},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stderr.splitlines()]

    debug = dispatch_once("debug")
    assert [r["claimed"] for r in debug if r["logger"] == "bot.delivery.dispatcher"] == [0]
    assert {r["level"] for r in debug} == {"DEBUG"}
    assert all(r.keys() >= JSON_KEYS for r in debug)
    assert dispatch_once("WARNING") == []

    for name, value, message in (
        ("LOG_LEVEL", "chatty", "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("HANDOVER_LOG_FORMAT", "xml", "HANDOVER_LOG_FORMAT must be text or json, got 'xml'"),
    ):
        result = subprocess.run(
            [*HANDOVER, "serve"], env={**env, name: value}, capture_output=True, text=True
        )
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.startswith(f"handover: configuration: {message}")
        assert "Traceback" not in result.stderr
