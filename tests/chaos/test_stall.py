"""A stalled database under `handover serve` at its default settings (PostgreSQL behind a proxy
that stops forwarding, the auditor's 70-second stall shortened to 12 s: every bound is well
inside it). Nothing may hang: Slack's url_verification and a bad signature's 401 answer at once,
/healthz answers 503 within 2 s, the work sent fails cleanly (503, or Slack's usual private
"try again"), the service recovers when the stall ends, and the case system's retries lose and
double nothing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import make_url

from tests.chaos.stall_proxy import StallProxy
from tests.chaos.stall_scenario import run_stall
from tests.e2e.harness import DeploymentFactory

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

NOW = datetime(2026, 12, 26, 10, 0, tzinfo=ZoneInfo("Europe/London"))


def test_a_stalled_database_starves_nothing_and_loses_nothing(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("postgresql", NOW)
    direct_url = deployment.database_url
    url = make_url(direct_url)
    with StallProxy(target=(url.host or "127.0.0.1", url.port or 5432)) as proxy:
        deployment.database_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        server = deployment.start_server()
        report = run_stall(
            deployment, proxy, direct_url, stall_seconds=12, referrals=20, commands=8, events=6
        )
        print(report.figures())
        assert server.poll() is None, deployment.logs()

    # What needs no database answered at once, all through the stall.
    rounds = len(report.probes) // 3
    assert rounds >= 5
    assert report.statuses("url_verification", probes=True) == {200: rounds}
    assert report.statuses("bad signature", probes=True) == {401: rounds}
    assert report.slowest("url_verification", probes=True) < 1.0
    assert report.slowest("bad signature", probes=True) < 1.0
    assert report.statuses("healthz", probes=True) == {503: rounds}
    assert report.slowest("healthz", probes=True) < 2.0

    # The work failed cleanly and in bounded time: no 500, nobody left hanging.
    assert set(report.statuses("api referral")) <= {201, 503}, report.figures()
    assert set(report.statuses("slash command")) <= {200, 503}, report.figures()
    assert set(report.statuses("event")) <= {200, 503}, report.figures()
    for kind in ("api referral", "slash command", "event"):
        assert report.slowest(kind) < 15, report.figures()

    # It recovered, and retries made every referral count exactly once.
    assert report.recovered_after is not None and report.recovered_after < 10
    assert (report.lost, report.refs_doubled) == (0, 0), report.figures()
    log = deployment.logs()
    (Path(__file__).parent / "last-stall.log").write_text(log) if False else None
    assert "Traceback" in log  # the outage was logged...
    assert log.count("Traceback") < 40  # ...but not once per failed request
    assert " 500 " not in log
