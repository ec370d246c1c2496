"""`handover serve` as a process: health check, graceful stop, configuration errors, and
Slack's retried Events API deliveries processed once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.e2e.harness import (
    API_SECRET,
    HANDOVER,
    SIGNING_SECRET,
    DeploymentFactory,
    _http,
    free_port,
    slack_user_of,
    wait_for,
)
from tests.handlers.slack_payloads import app_home_opened

pytestmark = pytest.mark.slow

NOW = datetime(2026, 12, 26, 10, 0, tzinfo=ZoneInfo("Europe/London"))
RAJ = slack_user_of("edt-mgr-raj")
METRICS_TOKEN = "prometheus-scrape-" + "9f3a" * 6  # HANDOVER_METRICS_TOKEN
GUESS = "prometheus-scrape-" + "9f3b" * 6


def healthz(base_url: str) -> tuple[int, object]:
    return _http("GET", f"{base_url}/healthz")


def test_healthz_and_a_graceful_exit_on_sigterm(new_deployment: DeploymentFactory) -> None:
    deployment = new_deployment("sqlite", NOW)
    server = deployment.start_server()
    assert healthz(deployment.base_url) == (200, {"status": "ok"})
    # Without HANDOVER_METRICS_TOKEN /metrics answers anyone, and serve says so at start-up.
    assert scrape(deployment.base_url)[0] == 200
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=15) == 0
    log = deployment.logs()
    assert "signal SIGTERM: stopping" in log and "Traceback" not in log
    assert (
        "GET /metrics answers anyone who can reach 0.0.0.0: set HANDOVER_METRICS_TOKEN to "
        "require a bearer token, or HOST=127.0.0.1 (docs/operations.md)"
    ) in log
    with pytest.raises(OSError):
        healthz(deployment.base_url)


def scrape(base_url: str, authorization: str | None = None) -> tuple[int, str, str | None]:
    """GET /metrics over HTTP: the status, the body and the WWW-Authenticate header."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    request = urllib.request.Request(f"{base_url}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode(), answer.headers.get("WWW-Authenticate")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode(), refused.headers.get("WWW-Authenticate")


def test_with_a_metrics_token_a_scrape_needs_it_as_a_bearer_token(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", NOW)
    deployment.extra_env["HANDOVER_METRICS_TOKEN"] = METRICS_TOKEN
    deployment.start_server("--no-dispatcher")
    url = deployment.base_url

    assert scrape(url) == (401, "unauthorized\n", 'Bearer realm="handover-metrics"')
    wrong = 'Bearer realm="handover-metrics", error="invalid_token"'
    assert scrape(url, f"Bearer {GUESS}") == (401, "unauthorized\n", wrong)
    assert scrape(url, f"Basic {METRICS_TOKEN}") == (401, "unauthorized\n", wrong)
    status, body, challenge = scrape(url, f"Bearer {METRICS_TOKEN}")
    assert (status, challenge) == (200, None)
    assert "# TYPE handover_outbox_depth gauge" in body
    assert healthz(url) == (200, {"status": "ok"})  # only /metrics asks for the token

    log = deployment.logs()
    # Each refusal kind once (more of a kind within a minute are counted, bot/logfilter.py).
    assert log.count("metrics: refused a scrape from 127.0.0.1: no Authorization header") == 1
    assert log.count("refused a scrape from 127.0.0.1: wrong or malformed bearer token\n") == 1
    assert "GET /metrics answers anyone" not in log  # a token is set: no warning
    assert METRICS_TOKEN not in log and GUESS not in log


def test_healthz_is_503_while_the_database_is_unreachable(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("postgresql", NOW)
    server = deployment.start_server("--no-dispatcher")
    assert healthz(deployment.base_url) == (200, {"status": "ok"})
    url = make_url(deployment.database_url)
    deployment.close()
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
    finally:
        admin.dispose()
    status, body = healthz(deployment.base_url)
    assert status == 503
    assert body["status"] == "unavailable"
    assert url.password is None or url.password not in json.dumps(body)
    # The process survives the outage and still stops cleanly.
    assert server.poll() is None
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=15) == 0


def test_serve_without_a_bot_token_exits_1_with_a_clear_message(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", NOW)
    env = {k: v for k, v in deployment.env.items() if k != "SLACK_BOT_TOKEN"}
    result = subprocess.run(
        [*HANDOVER, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "SLACK_BOT_TOKEN is required" in result.stderr
    assert "Traceback" not in result.stderr
    for secret in (SIGNING_SECRET, API_SECRET):
        assert secret not in result.stderr + result.stdout
    env = {k: v for k, v in deployment.env.items() if k != "SLACK_SIGNING_SECRET"}
    result = subprocess.run(
        [*HANDOVER, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "SLACK_SIGNING_SECRET is required" in result.stderr
    assert "xoxb-e2e-token" not in result.stderr + result.stdout


def test_a_retried_events_api_delivery_is_processed_once(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", NOW)
    deployment.start_server()
    challenge = {
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3g",
        "type": "url_verification",
    }
    status, body = deployment.slack_event(challenge)
    assert (status, body) == (200, {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3g"})

    delivery = app_home_opened("Ev0HANDOVER01", RAJ)
    assert deployment.slack_event(delivery)[0] == 200
    wait_for(lambda: deployment.standin.calls("views.publish"), timeout=10)
    # Slack did not see our answer in time and delivers the same event again.
    for retry in ("1", "2"):
        status, _ = deployment.slack_event(
            delivery, **{"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"}
        )
        assert status == 200
    # A different event is still processed: the dedupe is by event_id, not by user or type.
    assert deployment.slack_event(app_home_opened("Ev0HANDOVER02", RAJ))[0] == 200
    wait_for(lambda: len(deployment.standin.calls("views.publish")) == 2, timeout=10)
    time.sleep(0.5)
    publishes = deployment.standin.calls("views.publish")
    assert [call["args"]["user_id"] for call in publishes] == [RAJ, RAJ]
    assert sorted(deployment.query("SELECT event_id FROM slack_events")) == [
        ("Ev0HANDOVER01",),
        ("Ev0HANDOVER02",),
    ]


def test_serve_exits_3_when_slack_is_unreachable_and_1_when_it_refuses_the_token(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", NOW)
    env = {**deployment.env, "SLACK_API_URL": f"http://127.0.0.1:{free_port()}/api/"}
    result = subprocess.run(
        [*HANDOVER, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "handover: Slack is unreachable" in result.stderr
    assert "Traceback" not in result.stderr

    deployment.standin.post("tokens", {"revoke": "xoxb-e2e-token"})
    result = deployment.run("serve", check=False)
    assert result.returncode == 1, result.stderr
    assert "handover: Slack refused SLACK_BOT_TOKEN (token_revoked)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "xoxb-e2e-token" not in result.stderr + result.stdout


def test_socket_mode_that_cannot_connect_exits_3_without_a_traceback(
    new_deployment: DeploymentFactory,
) -> None:
    # The stand-in does not simulate Socket Mode: apps.connections.open answers an error.
    deployment = new_deployment("sqlite", NOW)
    env = {**deployment.env, "SLACK_APP_TOKEN": "xapp-e2e-app-token"}
    result = subprocess.run(
        [*HANDOVER, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "handover: Slack refused the Socket Mode connection" in result.stderr
    assert "Traceback" not in result.stderr
    assert "xapp-e2e-app-token" not in result.stderr + result.stdout
