"""GET /metrics: the database's figures in Prometheus's text format, the same from any instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, RowState
from bot.services import audit
from bot.web.metrics import bearer_token_matches, create_metrics_blueprint, exposure_warning
from tests.bot.delivery.test_outbox import add_prompt, add_referral

T = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)  # a Monday morning
TOKEN = "scrape-" + "s3cr3t" * 5  # HANDOVER_METRICS_TOKEN (37 characters)


def scrape(factory: sessionmaker[Session], now: datetime) -> tuple[int, str, str]:
    from flask import Flask

    web = Flask("metrics-test")
    web.register_blueprint(create_metrics_blueprint(factory, lambda: now))
    answer = web.test_client().get("/metrics")
    return answer.status_code, answer.content_type, answer.get_data(as_text=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sent(session: Session, at: datetime, *, due: datetime = T, late: bool = False, **fields):
    """A row claimed and settled as sent at `at` the way the dispatcher settles it."""
    row = add_prompt(session, due, state=RowState.CLAIMED, claimed_by="metrics-test", **fields)
    assert outbox.mark_sent(
        session, row.id, instance_id="metrics-test", now=at, channel="D1", ts="1.1", late=late
    )


def seed(session: Session) -> None:
    """A morning's outbox and log: sent, late, failed, due, held rows; escalations, a breach."""
    add_referral(session)
    # Delivered on time (3 s after its time), late (40 min), by email (90 s), and a failure.
    sent(session, T + timedelta(seconds=3), channel="slack")
    sent(session, T + timedelta(minutes=40), channel="slack", late=True)
    sent(session, T + timedelta(seconds=90), channel="email")
    add_prompt(session, T, state=RowState.FAILED, channel="slack")
    sent(session, T, kind=OutboxKind.ON_CALL, channel="slack")
    # An escalation step performed: not a message, not counted as a send.
    sent(session, T, kind=OutboxKind.ESCALATION)
    # Due 25 and 5 minutes ago and still waiting (one held by a dispatcher); one due tomorrow.
    add_prompt(session, T + timedelta(minutes=5))
    add_prompt(session, T + timedelta(minutes=25), state=RowState.CLAIMED)
    add_prompt(session, T + timedelta(days=1))
    add_prompt(session, T + timedelta(minutes=10), kind=OutboxKind.ESCALATION)
    for event in ("reminder_sent", "escalated", "escalated", "escalated_channel", "breach"):
        audit.record(
            session, event, at=T, referral_id="HO-AAAAAA", actor="dispatcher", target="team:x"
        )


def test_metrics_are_counts_read_from_the_database(session_factory) -> None:
    with session_factory.begin() as session:
        seed(session)
    now = T + timedelta(minutes=30)

    status, content_type, text = scrape(session_factory, now)

    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    got = samples(text)
    # Due and waiting: two prompts (the oldest due 25 minutes ago) and one escalation step.
    assert got[("handover_outbox_depth", (("kind", "prompt"),))] == 2
    assert got[("handover_outbox_depth", (("kind", "escalation"),))] == 1
    assert got[("handover_outbox_depth", (("kind", "card"),))] == 0
    assert got[("handover_outbox_scheduled", (("kind", "prompt"),))] == 1
    assert got[("handover_outbox_oldest_due_age_seconds", (("kind", "prompt"),))] == 25 * 60
    assert got[("handover_outbox_oldest_due_age_seconds", (("kind", "escalation"),))] == 20 * 60
    assert got[("handover_outbox_oldest_due_age_seconds", (("kind", "card"),))] == 0
    # Sends by kind, channel and outcome; the escalation step is not one.
    sends = {
        labels: value for (name, labels), value in got.items() if name == "handover_sends_total"
    }
    assert sends == {
        (("channel", "slack"), ("kind", "prompt"), ("outcome", "delivered")): 1,
        (("channel", "slack"), ("kind", "prompt"), ("outcome", "delivered_late")): 1,
        (("channel", "slack"), ("kind", "prompt"), ("outcome", "failed")): 1,
        (("channel", "email"), ("kind", "prompt"), ("outcome", "delivered")): 1,
        (("channel", "slack"), ("kind", "on_call"), ("outcome", "delivered")): 1,
    }
    # Lateness: slack 0 s, 3 s and 2400 s; email 90 s.
    slack = (("channel", "slack"),)
    assert got[("handover_send_lateness_seconds_count", slack)] == 3
    assert got[("handover_send_lateness_seconds_sum", slack)] == 2403
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "slack"), ("le", "1.0")))] == 1
    )
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "slack"), ("le", "5.0")))] == 2
    )
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "slack"), ("le", "1800.0")))]
        == 2
    )
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "slack"), ("le", "3600.0")))]
        == 3
    )
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "slack"), ("le", "+Inf")))] == 3
    )
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "email"), ("le", "60.0")))] == 0
    )
    assert (
        got[("handover_send_lateness_seconds_bucket", (("channel", "email"), ("le", "120.0")))] == 1
    )
    # Escalation steps and breaches, as the log has them.
    assert got[("handover_escalations_total", (("step", "reminder_sent"),))] == 1
    assert got[("handover_escalations_total", (("step", "escalated"),))] == 2
    assert got[("handover_escalations_total", (("step", "escalated_channel"),))] == 1
    assert got[("handover_breaches_total", ())] == 1
    assert got[("handover_log_events_total", (("event", "escalated"),))] == 2


def test_two_instances_answer_alike_and_an_empty_database_is_all_zeros(session_factory) -> None:
    _, _, empty = scrape(session_factory, T)
    got = samples(empty)
    assert got[("handover_breaches_total", ())] == 0
    assert got[("handover_outbox_depth", (("kind", "prompt"),))] == 0
    assert not any(name == "handover_sends_total" for name, _ in got)

    with session_factory.begin() as session:
        seed(session)
    # Two apps on one database (two instances): the same figures.
    assert scrape(session_factory, T)[2] == scrape(session_factory, T)[2]


def test_a_database_that_cannot_answer_is_a_503_not_zeros(session_factory) -> None:
    class Down:
        def __call__(self) -> Session:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    status, _, text = scrape(Down(), T)  # type: ignore[arg-type]
    assert (status, text) == (503, "database unavailable\n")


@pytest.mark.parametrize(
    ("authorization", "matches"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN} ", True),  # the scheme is case-insensitive (RFC 7235)
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer", False),
        ("", False),
        (None, False),
    ],
)
def test_a_bearer_token_must_match_exactly(authorization: str | None, matches: bool) -> None:
    assert bearer_token_matches(authorization, TOKEN) is matches


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("handover.internal", True),
        ("127.0.0.1", False),
        ("127.0.0.53", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
    ],
)
def test_serve_warns_when_metrics_are_open_to_the_network(host: str, warned: bool) -> None:
    expected = (
        f"GET /metrics answers anyone who can reach {host}: set HANDOVER_METRICS_TOKEN to "
        "require a bearer token, or HOST=127.0.0.1 (docs/operations.md)"
    )
    assert exposure_warning(host, None) == (expected if warned else None)
    assert exposure_warning(host, TOKEN) is None


def test_click_jobs_not_done_are_counted_with_the_oldest_ones_age(session_factory) -> None:
    from bot.slackjobs import queue

    engine = session_factory.kw["bind"]
    assert samples(scrape(session_factory, T)[2])[("handover_slack_jobs_waiting", ())] == 0
    jobs = [queue.NewJob(kind="handover_ack", payload={"value": n}) for n in range(3)]
    with engine.begin() as connection:
        queue.add_jobs(connection, jobs[:1], now=T - timedelta(seconds=90))
        queue.add_jobs(connection, jobs[1:], now=T - timedelta(seconds=30))
    with session_factory.begin() as session:  # one is claimed (still not done), then one done
        [first] = queue.claim_ready(session, T, instance_id="r", limit=1, lease=timedelta(1))
        [second] = queue.claim_ready(session, T, instance_id="r", limit=1, lease=timedelta(1))
        assert queue.finish(session, second.id, instance_id="r", now=T)
    got = samples(scrape(session_factory, T)[2])
    assert got[("handover_slack_jobs_waiting", ())] == 2
    assert got[("handover_slack_jobs_oldest_age_seconds", ())] == 90.0
    with session_factory.begin() as session:
        assert queue.finish(session, first.id, instance_id="r", now=T)
    got = samples(scrape(session_factory, T)[2])
    assert got[("handover_slack_jobs_waiting", ())] == 1
    assert got[("handover_slack_jobs_oldest_age_seconds", ())] == 30.0
