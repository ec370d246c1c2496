"""A stalled PostgreSQL under a running `handover serve`, as the auditor met it: packets dropped,
not refused. Used by tests/chaos/test_stall.py (which asserts) and benchmarks/bench_chaos.py
(which prints the figures).

While the database is stalled, a case system posts referrals, people use `/handover`, Slack
delivers events; meanwhile Slack's url_verification, a badly signed request and `/healthz` are
probed every half second. Then the stall ends, the case system retries what was refused (as it
must: `external_ref` makes that safe), and we count what was lost and what was doubled.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from tests.chaos.stall_proxy import StallProxy
from tests.e2e.harness import Deployment, _http, slack_user_of
from tests.handlers.slack_payloads import app_home_opened

ON_CALL_ROLE_HOLDER = "edt-mgr-raj"


@dataclass
class Attempt:
    kind: str
    status: int | None  # None: no answer at all (the client gave up)
    seconds: float


@dataclass
class StallReport:
    """What happened to every request during a stall, and after it."""

    stall_seconds: float
    attempts: list[Attempt] = field(default_factory=list)  # the work sent during the stall
    probes: list[Attempt] = field(default_factory=list)  # url_verification, 401, /healthz
    recovered_after: float | None = None  # seconds from the end of the stall to /healthz 200
    refs_sent: int = 0
    refs_stored: int = 0
    refs_doubled: int = 0
    retries: int = 0

    @property
    def lost(self) -> int:
        return self.refs_sent - self.refs_stored

    def statuses(self, kind: str | None = None, probes: bool = False) -> Counter[int | None]:
        rows = self.probes if probes else self.attempts
        return Counter(a.status for a in rows if kind is None or a.kind == kind)

    def slowest(self, kind: str, probes: bool = False) -> float:
        rows = self.probes if probes else self.attempts
        return max((a.seconds for a in rows if a.kind == kind), default=0.0)

    def figures(self) -> str:
        """The report as a few lines for docs/chaos.md."""
        lines = [f"stall of {self.stall_seconds:.0f} s; work sent during it:"]
        for kind in sorted({a.kind for a in self.attempts}):
            counts = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses(kind).items(),
                                                            key=lambda i: str(i[0])))  # fmt: skip
            lines.append(f"  {kind}: {counts}; slowest answer {self.slowest(kind):.1f} s")
        for kind in sorted({p.kind for p in self.probes}):
            counts = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses(kind, True).items(),
                                                            key=lambda i: str(i[0])))  # fmt: skip
            lines.append(f"  probe {kind}: {counts}; slowest {self.slowest(kind, True):.2f} s")
        lines.append(f"healthy again {self.recovered_after:.1f} s after the stall ended")
        lines.append(
            f"referrals: {self.refs_sent} sent, {self.refs_stored} stored after "
            f"{self.retries} retries, {self.lost} lost, {self.refs_doubled} doubled"
        )
        return "\n".join(lines)


def referral(external_ref: str) -> dict[str, Any]:
    return {
        "external_ref": external_ref,
        "category": "neglect",
        "urgency": "urgent",
        "referrer": "edt-amy",
        "notify": ["person:hv-jsmith", "role:police_dau"],
        "summary": "stall test referral",
    }


def _timed(kind: str, call: Callable[[], tuple[int, Any]], into: list[Attempt]) -> None:
    started = time.monotonic()
    try:
        status: int | None = call()[0]
    except OSError:
        status = None
    into.append(Attempt(kind, status, time.monotonic() - started))


def run_stall(
    deployment: Deployment,
    proxy: StallProxy,
    direct_url: str,
    *,
    stall_seconds: float,
    referrals: int,
    commands: int,
    events: int,
    tag: str = "STALL",
) -> StallReport:
    """Stall the proxy for `stall_seconds` while that much work arrives; then recover."""
    report = StallReport(stall_seconds)
    refs = [f"LCS-{tag}-{i:04d}" for i in range(referrals)]
    report.refs_sent = len(refs)
    api_answers: dict[str, int | None] = {}
    raj = slack_user_of(ON_CALL_ROLE_HOLDER)

    def post(ref: str) -> tuple[int, Any]:
        answer = deployment.api("POST", "/api/referrals", referral(ref))
        api_answers[ref] = answer[0]
        return answer

    work: list[Callable[[], None]] = []
    for ref in refs:
        work.append(lambda ref=ref: _timed("api referral", lambda: post(ref), report.attempts))
    for _ in range(commands):
        work.append(lambda: _timed("slash command", lambda: deployment.slash_command(
            raj, "oncall")[:2], report.attempts))  # fmt: skip
    for i in range(events):
        work.append(lambda i=i: _timed("event", lambda: deployment.slack_event(
            app_home_opened(f"Ev{tag}{i:04d}", raj)), report.attempts))  # fmt: skip

    proxy.stall()
    stalled_at = time.monotonic()
    threads = [threading.Thread(target=job) for job in work]
    for thread in threads:
        thread.start()
    while time.monotonic() - stalled_at < stall_seconds:
        _probe(deployment, report.probes)
        time.sleep(0.5)
    proxy.resume()
    resumed_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=60)
    while time.monotonic() - resumed_at < 60:
        if _http("GET", f"{deployment.base_url}/healthz")[0] == 200:
            report.recovered_after = time.monotonic() - resumed_at
            break
        time.sleep(0.2)

    # The case system retries each referral it was not sure of, as the API tells it to.
    for ref in refs:
        for _ in range(10):
            if api_answers.get(ref) in (200, 201):
                break
            report.retries += 1
            post(ref)
            time.sleep(0.1)
    engine = create_engine(direct_url)
    try:
        with engine.connect() as conn:
            stored = Counter(
                conn.execute(
                    text("SELECT external_ref FROM referrals WHERE external_ref LIKE :p"),
                    {"p": f"LCS-{tag}-%"},
                ).scalars()
            )
    finally:
        engine.dispose()
    report.refs_stored = sum(1 for ref in refs if stored[ref] >= 1)
    report.refs_doubled = sum(1 for ref in refs if stored[ref] > 1)
    return report


def _probe(deployment: Deployment, into: list[Attempt]) -> None:
    challenge = json.dumps({"type": "url_verification", "challenge": "stall-probe"}).encode()
    _timed(
        "url_verification",
        lambda: deployment.slack_raw(challenge, "application/json"),
        into,
    )
    _timed(
        "bad signature",
        lambda: deployment.slack_raw(b"payload=%7B%7D", secret="not-the-signing-secret"),
        into,
    )
    _timed("healthz", lambda: _http("GET", f"{deployment.base_url}/healthz"), into)
