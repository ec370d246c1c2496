"""The harness's own promise: a `serve` whose port another process took before it could bind it
is started again on another port, so a test never fails on a race for a free port."""

from __future__ import annotations

import socket
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import ADDRESS_IN_USE

LONDON = ZoneInfo("Europe/London")


def test_serve_is_started_again_on_another_port_when_its_port_was_taken(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", datetime(2026, 11, 28, 22, 0, tzinfo=LONDON))
    taken = deployment.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        deployment.start_server()
        assert deployment.port != taken
    first = (deployment.workdir / "proc-00-serve.log").read_text(encoding="utf-8")
    assert ADDRESS_IN_USE in first
    assert "Traceback" not in first  # serve names the address in use, no traceback
