"""The referral API over real HTTP, with real HMAC signatures, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from bot.clock import FixedClock
from bot.db import create_db_engine, make_session_factory
from bot.delivery.kinds import OutboxKind
from bot.models import AUDIT_EVENTS, AuditEvent, OutboxMessage, Referral, Target
from bot.services import audit
from bot.services.intake import FIELDS, REQUIRED_FIELDS, SOURCES
from bot.settings import Settings
from bot.web.api import MAX_BODY_BYTES, create_api_blueprint
from handlers.ids import CATEGORIES, URGENCIES
from rota.plan import AlertKind, Via
from tests.bot.rota_fixtures import ROTA_VERSION, build_rota

SECRET = "test-secret-not-for-production-0123456789"
T0 = datetime(2026, 11, 14, 10, 30, tzinfo=UTC)  # Saturday, GMT
EDT_CARD_CHANNEL = "C0EDTCARD"
SUMMARY = "Mother assaulted while holding baby NARRATIVE-7731; father known to probation"
REFERRAL_ID_RE = re.compile(r"^HO-[0-9A-HJKMNP-TV-Z]{6}$")
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def weekend_referral(**changes: Any) -> dict[str, Any]:
    body = {
        "external_ref": "LCS-2026-000123",
        "category": "domestic_abuse",
        "urgency": "standard",
        "referred_at": "2026-11-14T02:10",
        "referrer": "edt-amy",
        "notify": [
            "person:hv-jsmith",
            "team:gp-northgate",
            "role:police_dau",
            "role:paediatrician",
        ],
        "summary": SUMMARY,
    }
    body.update(changes)
    return body


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v1:" + timestamp.encode() + b":" + body
    return "v1=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Answer:
    status: int
    text: str
    content_type: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


class ApiClient:
    """Signs and sends requests to the served blueprint with http.client."""

    def __init__(self, port: int, clock: FixedClock) -> None:
        self.port = port
        self.clock = clock

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] = b"",
        *,
        secret: str | None = SECRET,
        timestamp: str | None = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Answer:
        if timestamp is None:
            timestamp = str(int(self.clock.now().timestamp()))
        sent = {"Content-Type": "application/json"}
        if secret is not None:
            raw = body if isinstance(body, bytes) else b"".join(body)
            sent["X-Handover-Timestamp"] = timestamp
            sent["X-Handover-Signature"] = signature(secret, timestamp, raw)
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            if chunked:
                conn.request(method, path, body=body, headers=sent, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Answer(
                response.status,
                response.read().decode("utf-8"),
                response.getheader("Content-Type", ""),
            )
        finally:
            conn.close()

    def post(self, data: dict[str, Any] | bytes, **kwargs: Any) -> Answer:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return self.request("POST", "/api/referrals", body, **kwargs)

    def get(self, referral_id: str, **kwargs: Any) -> Answer:
        return self.request("GET", f"/api/referrals/{referral_id}", **kwargs)


def api_settings(**changes: Any) -> Settings:
    settings = Settings(api_secret=SECRET, edt_channel=EDT_CARD_CHANNEL)
    return replace(settings, **changes)


@contextmanager
def serving(
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    wake_dispatcher: Callable[[], None] = lambda: None,
) -> Iterator[ApiClient]:
    """Serve a Flask app holding only the API blueprint on a free local port."""
    app = Flask("handover-api-test")
    app.register_blueprint(
        create_api_blueprint(settings, session_factory, clock, wake_dispatcher=wake_dispatcher)
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll: shutdown() waits for it (the default 0.5 s, at every test's teardown).
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield ApiClient(server.server_port, clock)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def api(session_factory: sessionmaker[Session], clock: FixedClock) -> Iterator[ApiClient]:
    build_rota(session_factory)
    with serving(api_settings(), session_factory, clock) as client:
        yield client


def counts(session_factory: sessionmaker[Session]) -> dict[str, int]:
    with session_factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Referral, Target, OutboxMessage, AuditEvent)
        }


NOTHING = {"referrals": 0, "targets": 0, "outbox": 0, "audit_log": 0}


def audit_rows(session: Session) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


# The weekend referral ----------------------------------------------------------------------

EXPECTED_PLAN = [
    {
        "target": "person:hv-jsmith",
        "recipient": "hv-jsmith",
        "via": "self",
        "due_at": "2026-11-16T09:00:00+00:00",
        "immediate": False,
    },
    {
        "target": "team:gp-northgate",
        "recipient": "gp-duty1",
        "via": "duty",
        "due_at": "2026-11-17T08:00:00+00:00",
        "immediate": False,
    },
    {
        "target": "role:police_dau",
        "recipient": "pc-jones",
        "via": "shift",
        "due_at": "2026-11-14T10:30:00+00:00",
        "immediate": True,
    },
    {
        "target": "role:paediatrician",
        "recipient": None,
        "via": "unroutable",
        "due_at": None,
        "immediate": False,
    },
]
EXPECTED_ALERTS = [
    {
        "kind": "on_call",
        "target": "role:edt_manager",
        "recipient": "edt-mgr",
        "detail": "on call as edt_manager: referral received Sat 14 Nov 10:30",
    },
    {
        "kind": "long_gap",
        "target": "team:gp-northgate",
        "recipient": "edt-mgr",
        "detail": "next reachable Tue 17 Nov 08:00 (69 h 30 min after receipt)",
    },
    {
        "kind": "unroutable",
        "target": "role:paediatrician",
        "recipient": "edt-mgr",
        "detail": "nobody in the chain is at work within 7 days",
    },
]
MON_0900 = datetime(2026, 11, 16, 9, tzinfo=UTC)
TUE_0800 = datetime(2026, 11, 17, 8, tzinfo=UTC)


def test_weekend_referral_is_planned_and_every_row_written(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    answer = api.post(weekend_referral())

    assert answer.status == 201, answer.text
    assert answer.content_type == "application/json"
    body = answer.json
    referral_id = body["referral_id"]
    assert REFERRAL_ID_RE.match(referral_id)
    assert body == {
        "referral_id": referral_id,
        "status": "open",
        "rota_version": ROTA_VERSION,
        "plan": EXPECTED_PLAN,
        "alerts": EXPECTED_ALERTS,
    }
    assert list(body) == ["referral_id", "status", "rota_version", "plan", "alerts"]

    with session_factory() as session:
        referral = session.get(Referral, referral_id)
        assert referral is not None
        assert referral.external_ref == "LCS-2026-000123"
        assert referral.category == "domestic_abuse"
        assert referral.urgency == "standard"
        assert referral.referred_at == datetime(2026, 11, 14, 2, 10, tzinfo=UTC)
        assert referral.received_at == T0  # t0 is receipt, not referred_at
        assert referral.referrer_id == "edt-amy"
        assert referral.summary == SUMMARY
        assert referral.source == "api"
        assert referral.status == "open"
        assert referral.rota_version == ROTA_VERSION
        assert json.loads(referral.plan_json) == body
        assert len(referral.request_hash) == 64

        targets = session.scalars(
            select(Target).where(Target.referral_id == referral_id).order_by(Target.position)
        ).all()
        assert [
            (t.position, t.spec, t.planned_via, t.planned_recipient, t.due_at, t.state)
            for t in targets
        ] == [
            (0, "person:hv-jsmith", "self", "hv-jsmith", MON_0900, "held"),
            (1, "team:gp-northgate", "duty", "gp-duty1", TUE_0800, "held"),
            (2, "role:police_dau", "shift", "pc-jones", T0, "held"),
            (3, "role:paediatrician", "unroutable", None, None, "unroutable"),
        ]
        position = {t.id: t.position for t in targets}

        prompts = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [
            (
                p.kind,
                position.get(p.target_id),
                p.recipient_id,
                p.address,
                p.due_at,
                p.state,
                p.attempts,
            )
            for p in prompts
        ] == [
            (OutboxKind.CARD, None, None, EDT_CARD_CHANNEL, T0, "pending", 0),
            (OutboxKind.ON_CALL, None, "edt-mgr", None, T0, "pending", 0),
            (OutboxKind.PROMPT, 0, None, None, MON_0900, "pending", 0),
            (OutboxKind.PROMPT, 1, None, None, TUE_0800, "pending", 0),
            (OutboxKind.PROMPT, 2, None, None, T0, "pending", 0),
            (OutboxKind.LONG_GAP, 1, "edt-mgr", None, T0, "pending", 0),
            ("unroutable", 3, "edt-mgr", None, T0, "pending", 0),
        ]
        assert all(p.referral_id == referral_id for p in prompts)
        long_gap = json.loads(prompts[5].detail)
        # one key for every holder's DM of this alert: an acknowledgement stops them all
        assert re.fullmatch(r"[0-9a-f]{32}", long_gap.pop("alert_key"))
        assert long_gap == {
            "target": "team:gp-northgate",
            "detail": "next reachable Tue 17 Nov 08:00 (69 h 30 min after receipt)",
        }
        assert json.loads(prompts[6].detail)["detail"] == (
            "nobody in the chain is at work within 7 days"
        )

        events = audit_rows(session)
        assert [(e.event, e.actor, e.recipient, e.target) for e in events] == [
            ("referral_received", "edt-amy", None, None),
            ("prompt_scheduled", None, "hv-jsmith", "person:hv-jsmith"),
            ("prompt_scheduled", None, "gp-duty1", "team:gp-northgate"),
            ("long_gap_alert", None, "edt-mgr", "team:gp-northgate"),
            ("prompt_scheduled", None, "pc-jones", "role:police_dau"),
            ("unroutable", None, None, "role:paediatrician"),
        ]
        assert all(e.at == T0 for e in events)
        assert all(e.referral_id == referral_id for e in events)
        assert all(e.rota_version == ROTA_VERSION for e in events)
        details = [json.loads(e.detail) for e in events]
        assert details[0] == {
            "source": "api",
            "external_ref": "LCS-2026-000123",
            "category": "domestic_abuse",
            "urgency": "standard",
            "referred_at": "2026-11-14T02:10:00+00:00",
            "targets": 4,
        }
        assert details[1] == {
            "due_at": "2026-11-16T09:00:00+00:00",
            "via": "self",
            "immediate": False,
        }
        assert details[3] == {
            "due_at": "2026-11-17T08:00:00+00:00",
            "gap_minutes": 69 * 60 + 30,
            "gap": "69 h 30 min",
        }
        assert details[4] == {
            "due_at": "2026-11-14T10:30:00+00:00",
            "via": "shift",
            "immediate": True,
        }
        assert details[5] == {"reason": "nobody in the chain is at work within 7 days"}


def test_summary_is_kept_in_the_referral_but_nowhere_else(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    answer = api.post(weekend_referral())
    assert answer.status == 201
    assert "NARRATIVE-7731" not in answer.text
    assert api.post(weekend_referral()).status == 200  # the duplicate's audit row too

    with session_factory() as session:
        assert session.scalar(select(Referral.summary)) == SUMMARY
        assert "NARRATIVE" not in session.scalar(select(Referral.plan_json))
        for row in audit_rows(session):
            assert "NARRATIVE" not in (row.detail or "")
        for prompt in session.scalars(select(OutboxMessage)):
            assert "NARRATIVE" not in (prompt.detail or "")


def test_referred_at_defaults_to_receipt_and_offsets_are_kept(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    data = weekend_referral(notify=["role:police_dau"])
    del data["referred_at"]
    assert api.post(data).status == 201
    data = weekend_referral(
        external_ref="LCS-2026-000124", notify=["role:police_dau"], referred_at="2026-11-14T03:10Z"
    )
    assert api.post(data).status == 201
    with session_factory() as session:
        assert dict(session.execute(select(Referral.external_ref, Referral.referred_at)).all()) == {
            "LCS-2026-000123": T0,
            "LCS-2026-000124": datetime(2026, 11, 14, 3, 10, tzinfo=UTC),
        }


# The contract's categories and urgencies (docs/reference/http.md), written out: a case system
# sends exactly these words, so a renamed or dropped one must fail here.
CONTRACT_CATEGORIES = ("domestic_abuse", "physical_abuse", "sexual_abuse", "neglect",
                       "emotional_abuse", "exploitation", "missing", "other")  # fmt: skip


def test_every_category_and_urgency_of_the_contract_is_accepted(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    sent = {}
    for number, category in enumerate(CONTRACT_CATEGORIES):
        ref = f"LCS-2026-{number:06d}"
        urgency = ("urgent", "standard")[number % 2]
        answer = api.post(
            weekend_referral(
                external_ref=ref, category=category, urgency=urgency, notify=["role:police_dau"]
            )
        )
        assert (answer.status, answer.json["status"]) == (201, "open"), answer.text
        sent[ref] = (category, urgency)
    with session_factory() as session:
        stored = session.execute(select(Referral.external_ref, Referral.category, Referral.urgency))
        assert {ref: (category, urgency) for ref, category, urgency in stored} == sent


# Idempotency -------------------------------------------------------------------------------


def test_a_new_referral_wakes_the_dispatcher_of_this_process_after_its_commit(
    session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    build_rota(session_factory)
    seen: list[int] = []

    def wake() -> None:  # what the dispatcher would find: the rows are committed already
        with session_factory() as session:
            seen.append(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)

    with serving(api_settings(), session_factory, clock, wake) as api:
        assert api.post(weekend_referral()).status == 201
        assert len(seen) == 1 and seen[0] > 0
        assert api.post(weekend_referral()).status == 200  # nothing new: no wake-up
        assert api.post(weekend_referral(summary="other")).status == 409
        bad = weekend_referral(external_ref="LCS-OTHER", notify=["team:nope"])
        assert api.post(bad).status == 422
    assert len(seen) == 1


def test_same_external_ref_and_content_answers_200_with_the_first_body(
    api: ApiClient, clock: FixedClock, session_factory: sessionmaker[Session]
) -> None:
    first = api.post(weekend_referral())
    assert first.status == 201
    written = counts(session_factory)

    clock.advance(timedelta(minutes=3))
    # The same content written differently: keys reordered, the same instant with an offset.
    reordered = dict(
        reversed(list(weekend_referral(referred_at="2026-11-14T02:10:00+00:00").items()))
    )
    again = api.post(reordered)

    assert again.status == 200
    assert again.text == first.text
    after = counts(session_factory)
    assert after == {**written, "audit_log": written["audit_log"] + 1}
    with session_factory() as session:
        last = audit_rows(session)[-1]
        assert (last.event, last.referral_id, last.actor, last.at) == (
            "referral_duplicate",
            first.json["referral_id"],
            "edt-amy",
            T0 + timedelta(minutes=3),
        )
        assert last.rota_version == ROTA_VERSION
        assert json.loads(last.detail) == {"source": "api", "external_ref": "LCS-2026-000123"}


def test_same_external_ref_with_different_content_is_a_conflict_writing_nothing(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    first = api.post(weekend_referral())
    written = counts(session_factory)

    answer = api.post(weekend_referral(summary=SUMMARY + " (amended)"))

    assert answer.status == 409
    assert answer.json == {
        "error": "external_ref was already used for a referral with different content",
        "referral_id": first.json["referral_id"],
    }
    assert counts(session_factory) == written
    assert api.post(weekend_referral(urgency="urgent")).status == 409
    assert counts(session_factory) == written


def test_two_identical_requests_at_once_make_one_referral(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    answers: list[Answer] = []
    barrier = threading.Barrier(2)

    def send() -> None:
        barrier.wait()
        answers.append(api.post(weekend_referral()))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(a.status for a in answers) == [200, 201]
    assert answers[0].json == answers[1].json
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Referral)) == 1
        assert [e.event for e in audit_rows(session)].count("referral_duplicate") == 1
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 7


# Authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Handover-Signature": "v1=" + "0" * 64}, id="forged"),
        pytest.param({"X-Handover-Signature": ""}, id="missing-signature"),
        pytest.param({"X-Handover-Signature": "v0=abc"}, id="garbled-signature"),
        pytest.param({"X-Handover-Timestamp": ""}, id="missing-timestamp"),
        pytest.param({"X-Handover-Timestamp": "yesterday"}, id="garbled-timestamp"),
    ],
)
def test_bad_signatures_are_refused_with_401_and_nothing_written(
    api: ApiClient, session_factory: sessionmaker[Session], headers: dict[str, str]
) -> None:
    answer = api.post(weekend_referral(), headers=headers)
    assert answer.status == 401
    assert answer.content_type == "application/json"
    assert set(answer.json) == {"error"}
    assert SECRET not in answer.text
    assert counts(session_factory) == NOTHING


def test_a_signature_made_with_another_secret_is_refused(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    assert api.post(weekend_referral(), secret="guessed").status == 401
    assert api.post(weekend_referral(), secret=None).status == 401
    assert counts(session_factory) == NOTHING


def test_a_signature_over_another_body_is_refused(
    api: ApiClient, session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    timestamp = str(int(clock.now().timestamp()))
    signed = json.dumps(weekend_referral()).encode()
    tampered = json.dumps(weekend_referral(urgency="urgent")).encode()
    answer = api.post(
        tampered,
        secret=None,
        headers={
            "X-Handover-Timestamp": timestamp,
            "X-Handover-Signature": signature(SECRET, timestamp, signed),
        },
    )
    assert answer.status == 401
    assert counts(session_factory) == NOTHING


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_timestamps_are_refused(
    api: ApiClient, session_factory: sessionmaker[Session], clock: FixedClock, skew: int
) -> None:
    timestamp = str(int(clock.now().timestamp()) + skew)
    answer = api.post(weekend_referral(), timestamp=timestamp)
    assert answer.status == 401
    assert "300" in answer.json["error"]
    assert counts(session_factory) == NOTHING


def test_a_timestamp_300_seconds_old_is_accepted(api: ApiClient, clock: FixedClock) -> None:
    timestamp = str(int(clock.now().timestamp()) - 300)
    assert api.post(weekend_referral(), timestamp=timestamp).status == 201


def test_the_api_is_404_while_no_secret_is_set(
    session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    build_rota(session_factory)
    with serving(api_settings(api_secret=None), session_factory, clock) as client:
        answer = client.post(weekend_referral())
        assert answer.status == 404
        assert answer.content_type == "application/json"
        assert client.get("HO-ABCDEF").status == 404
        assert client.get("HO-ABCDEF", secret=None).status == 404
    assert counts(session_factory) == NOTHING


# Malformed and invalid input ---------------------------------------------------------------


def test_a_body_over_64_kib_is_413(api: ApiClient, session_factory: sessionmaker[Session]) -> None:
    big = json.dumps(weekend_referral(summary="x" * (65 * 1024))).encode()
    assert len(big) > MAX_BODY_BYTES
    answer = api.post(big)
    assert answer.status == 413
    assert answer.content_type == "application/json"
    assert counts(session_factory) == NOTHING


def test_a_chunked_body_over_64_kib_is_413_without_reading_it_all(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    chunks = [b"[" + b'"x",' * 4096] * 5 + [b'"x"]']
    assert sum(map(len, chunks)) > MAX_BODY_BYTES
    answer = api.request("POST", "/api/referrals", chunks, chunked=True)
    assert answer.status == 413
    assert counts(session_factory) == NOTHING


def test_a_body_of_exactly_64_kib_is_read(api: ApiClient) -> None:
    data = weekend_referral(summary="")
    padding = MAX_BODY_BYTES - len(json.dumps(data).encode())
    body = json.dumps(data).encode()[:-1] + b" " * padding + b"}"
    assert len(body) == MAX_BODY_BYTES
    assert api.post(body).status == 201


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"external_ref": "LCS-1",', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\xfa", id="not-utf8"),
        pytest.param(b'{"notify": NaN}', id="nan"),
        pytest.param(b'["person:hv-jsmith"]', id="array"),
        pytest.param(b'"text"', id="string"),
    ],
)
def test_malformed_json_is_400(
    api: ApiClient, session_factory: sessionmaker[Session], body: bytes
) -> None:
    answer = api.post(body)
    assert answer.status == 400
    assert answer.content_type == "application/json"
    assert set(answer.json) == {"error"}
    assert counts(session_factory) == NOTHING


def test_every_field_error_is_answered_at_once_with_422(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    data = weekend_referral(
        category="burglary",
        referrer="edt-bob",
        notify=["person:hv-jsmith", "team:gp-x", "role:police_dau"],
    )
    answer = api.post(data)
    assert answer.status == 422
    assert answer.json == {
        "errors": [
            {"field": "category", "message": "must be one of " + ", ".join(CATEGORIES)},
            {"field": "referrer", "message": "edt-bob does not have the referrer permission"},
            {"field": "notify[1]", "message": "unknown team gp-x"},
        ]
    }
    assert counts(session_factory) == NOTHING


def test_422_lists_shape_errors_and_unknown_fields(
    api: ApiClient, session_factory: sessionmaker[Session]
) -> None:
    data = {
        "external_ref": "LCS 2026/1 with spaces",
        "urgency": "soon",
        "referred_at": "2026-11-15T10:00:00+00:00",
        "referrer": "edt-old",
        "notify": ["person:nobody", 7, "role:"],
        "summary": ["not", "text"],
        "priority": "high",
    }
    answer = api.post(data)
    assert answer.status == 422
    assert [e["field"] for e in answer.json["errors"]] == [
        "external_ref",
        "category",
        "urgency",
        "referred_at",
        "referrer",
        "notify[0]",
        "notify[1]",
        "notify[2]",
        "summary",
        "priority",
    ]
    assert counts(session_factory) == NOTHING


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"summary": "nul \x00 inside"}, "summary", id="nul-summary"),
        pytest.param({"referrer": "edt-\x00amy"}, "referrer", id="nul-referrer"),
        pytest.param({"notify": ["person:hv-\x00jsmith"]}, "notify[0]", id="nul-target"),
        pytest.param({"referred_at": "0001-01-01T00:00+01:00"}, "referred_at", id="year-0"),
        pytest.param({"referrer": "x" * 5000}, "referrer", id="long-referrer"),
    ],
)
def test_input_the_database_would_refuse_is_422_not_503(
    api: ApiClient, session_factory: sessionmaker[Session], changes: dict[str, Any], field: str
) -> None:
    answer = api.post(weekend_referral(**changes))
    assert answer.status == 422, answer.text
    assert [e["field"] for e in answer.json["errors"]] == [field]
    assert counts(session_factory) == NOTHING


@pytest.mark.parametrize(
    ("referred_at", "message"),
    [
        pytest.param("0001-01-01T00:00:30Z", "is before 2000-01-01", id="year-1"),
        pytest.param("1999-12-31T23:59:59+00:00", "is before 2000-01-01", id="1999"),
        pytest.param("9999-12-31T23:00-01:00", "is in the future", id="after-9999-in-utc"),
        pytest.param(
            "2026-11-14", "must be an ISO 8601 date-time, e.g. 2026-12-26T02:10", id="date"
        ),
        pytest.param("2026-W46", "must be an ISO 8601 date-time, e.g. 2026-12-26T02:10", id="week"),
    ],
)
def test_referred_at_must_be_a_date_and_time_from_2000_to_now(
    api: ApiClient, session_factory: sessionmaker[Session], referred_at: str, message: str
) -> None:
    answer = api.post(weekend_referral(referred_at=referred_at))
    assert answer.status == 422, answer.text
    assert answer.json == {"errors": [{"field": "referred_at", "message": message}]}
    assert counts(session_factory) == NOTHING


def test_referred_at_on_the_first_instant_of_2000_is_accepted(api: ApiClient) -> None:
    answer = api.post(weekend_referral(referred_at="2000-01-01T00:00:00Z"))
    assert answer.status == 201, answer.text


NOT_UNICODE = {"error": "the body is not valid Unicode: a string holds a lone UTF-16 surrogate"}


@pytest.mark.parametrize(
    "body",
    [
        # json.dumps writes a lone surrogate as the escape \ud800, as a sender's encoder may.
        pytest.param(json.dumps(weekend_referral(summary="\ud800")).encode(), id="summary"),
        pytest.param(json.dumps(weekend_referral(referrer="edt-\ud800")).encode(), id="referrer"),
        pytest.param(json.dumps(weekend_referral(notify=["person:\udc00x"])).encode(), id="notify"),
        pytest.param(
            json.dumps(weekend_referral(priority={"deep": ["\udfff"]})).encode(), id="nested"
        ),
        pytest.param(json.dumps({**weekend_referral(), "\ud800": 1}).encode(), id="key"),
        # The three bytes UTF-8 would give U+D800, were it allowed to encode it.
        pytest.param(
            json.dumps(weekend_referral(summary="SURROGATE"))
            .encode()
            .replace(b"SURROGATE", b"\xed\xa0\x80"),
            id="raw-bytes",
        ),
    ],
)
def test_a_string_that_is_not_valid_unicode_is_400(
    api: ApiClient, session_factory: sessionmaker[Session], body: bytes
) -> None:
    answer = api.post(body)
    assert (answer.status, answer.content_type) == (400, "application/json")
    assert answer.json == NOT_UNICODE
    assert counts(session_factory) == NOTHING


@pytest.mark.parametrize(
    ("body", "key"),
    [
        pytest.param(
            json.dumps(weekend_referral())[:-1].encode() + b', "summary": "other"}',
            "summary",
            id="top-level",
        ),
        pytest.param(
            json.dumps(weekend_referral())[:-1].encode() + b', "x": {"a": 1, "a": 2}}',
            "a",
            id="nested",
        ),
    ],
)
def test_a_repeated_json_key_is_400(
    api: ApiClient, session_factory: sessionmaker[Session], body: bytes, key: str
) -> None:
    answer = api.post(body)
    assert (answer.status, answer.content_type) == (400, "application/json")
    assert answer.json == {"error": f'the body repeats the key "{key}"'}
    assert counts(session_factory) == NOTHING


# Hostile bodies: any JSON value, then the ways a field can be wrong.
_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_NUMBERS = st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False))
_OBJECTS = st.dictionaries(st.text(max_size=8), _JSON, max_size=4)
_NOT_TEXT = st.one_of(_NUMBERS, st.lists(_JSON, max_size=4), _OBJECTS)
# Lone surrogates only: high ones alone, or low ones alone. A high surrogate followed by a low
# one is a valid pair, which JSON decodes to a real character (and a valid referral).
_SURROGATES = st.one_of(
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDBFF), min_size=1, max_size=3),
    st.text(st.characters(min_codepoint=0xDC00, max_codepoint=0xDFFF), min_size=1, max_size=3),
)
_TEXT_FIELDS = ("external_ref", "category", "urgency", "referred_at", "referrer", "summary")


def _with(**changes: Any) -> bytes:
    return json.dumps(weekend_referral(**changes)).encode()


def _nested(depth: int, field: str | None) -> bytes:
    deep = "[" * depth + "]" * depth
    if field is None:
        return deep.encode()
    return json.dumps(weekend_referral())[:-1].encode() + f', "{field}": {deep}}}'.encode()


HOSTILE_BODIES = st.one_of(
    # a field of the wrong type: numbers, booleans, lists, objects
    st.builds(lambda f, v: _with(**{f: v}), st.sampled_from(_TEXT_FIELDS), _NOT_TEXT),
    st.builds(lambda v: _with(notify=v), st.one_of(_NUMBERS, _OBJECTS)),
    st.builds(
        lambda v, i: _with(notify=[*["person:hv-jsmith", "role:police_dau"][:i], v]),
        _NOT_TEXT,
        st.integers(0, 2),
    ),
    # a required field as null
    st.builds(lambda f: _with(**{f: None}), st.sampled_from(REQUIRED_FIELDS)),
    # numbers written as strings
    st.builds(
        lambda f, n: _with(**{f: str(n)}),
        st.sampled_from(("category", "urgency", "referred_at", "referrer")),
        st.one_of(st.integers(), st.floats(allow_nan=False)),
    ),
    st.builds(lambda n: _with(notify=[str(n)]), st.integers()),
    # huge strings, up to past the 64 KiB limit
    st.builds(
        lambda f, n: _with(**{f: "x" * n}),
        st.sampled_from(_TEXT_FIELDS),
        st.integers(10_001, 70_000),
    ),
    st.builds(lambda n: _with(notify=["person:" + "x" * n]), st.integers(141, 70_000)),
    # a field not in the contract, of any value
    st.builds(
        lambda k, v: _with(**{k: v}),
        st.text(min_size=1, max_size=20).filter(lambda k: k not in FIELDS),
        _JSON,
    ),
    # a body that is not an object
    st.builds(
        lambda v: json.dumps(v).encode(), st.one_of(st.none(), _NUMBERS, st.text(), st.lists(_JSON))
    ),
    # a referral time before 2000 or after now, with or without an offset
    st.builds(
        lambda t: _with(referred_at=t.isoformat()),
        st.one_of(
            st.datetimes(max_value=datetime(1999, 12, 31, 23, 59)),
            st.datetimes(min_value=datetime(2027, 1, 1)),
        ).flatmap(
            lambda t: st.sampled_from(
                [t, t.replace(tzinfo=UTC), t.replace(tzinfo=timezone(timedelta(hours=14)))]
            )
        ),
    ),
    # lone surrogates (json.dumps writes them as \\ud800 escapes) and repeated keys
    st.builds(lambda t: _with(summary=t), _SURROGATES),
    st.builds(lambda t: _with(referrer="edt-" + t), _SURROGATES),
    st.builds(lambda t: _with(notify=["person:" + t]), _SURROGATES),
    st.builds(
        lambda f: json.dumps(weekend_referral())[:-1].encode() + f', "{f}": null}}'.encode(),
        st.sampled_from(FIELDS),
    ),
    # deep nesting, alone or in a field
    st.builds(_nested, st.integers(100, 50_000), st.sampled_from((None, "summary", "notify", "x"))),
)
ERROR_STATUSES = {400, 413, 422}


@hypothesis_settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never fails by chance
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=HOSTILE_BODIES)
def test_hostile_bodies_get_a_json_error_and_write_nothing(
    api: ApiClient, session_factory: sessionmaker[Session], body: bytes
) -> None:
    # The database is shared by the examples: each must leave it as it found it (empty).
    assert counts(session_factory) == NOTHING
    answer = api.post(body)
    assert answer.status in ERROR_STATUSES, (body[:200], answer.status, answer.text[:500])
    assert answer.content_type == "application/json"
    expected_key = "errors" if answer.status == 422 else "error"
    assert set(answer.json) == {expected_key}
    assert counts(session_factory) == NOTHING


def test_the_logs_hold_neither_the_summary_nor_the_secret(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert api.post(weekend_referral()).status == 201
    assert api.post(weekend_referral()).status == 200
    assert api.post(weekend_referral(summary="other")).status == 409
    assert api.post(weekend_referral(), secret="guessed").status == 401
    assert "LCS-2026-000123" in caplog.text
    assert "NARRATIVE" not in caplog.text
    assert SECRET not in caplog.text


# The database ------------------------------------------------------------------------------


def test_503_when_the_database_is_unreachable(
    db_url: str,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    build_rota(session_factory)
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        broken_url = url.set(database=str(tmp_path / "no-such-dir" / "handover.db"))
    else:
        broken_url = url.set(database=f"{url.database}_does_not_exist")
    broken = create_db_engine(broken_url.render_as_string(hide_password=False))
    try:
        with serving(api_settings(), make_session_factory(broken), clock) as client:
            answer = client.post(weekend_referral())
            assert answer.status == 503
            assert answer.json == {"error": "database unavailable"}
            assert client.get("HO-ABCDEF").status == 503
    finally:
        broken.dispose()
    assert counts(session_factory) == NOTHING


def test_503_when_the_database_fails_midway_writes_nothing(
    engine: Engine,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build_rota(session_factory)
    caplog.set_level(logging.DEBUG)

    def fail_on_outbox(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            raise OperationalError(statement, parameters, ConnectionError("server closed"))

    event.listen(engine, "before_cursor_execute", fail_on_outbox)
    try:
        with serving(api_settings(), session_factory, clock) as client:
            answer = client.post(weekend_referral())
            assert answer.status == 503
            assert answer.json == {"error": "database unavailable"}
            assert "Traceback" not in answer.text
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_outbox)
    assert counts(session_factory) == NOTHING
    assert "database unavailable" in caplog.text  # logged, with its traceback
    assert "NARRATIVE" not in caplog.text
    assert SECRET not in caplog.text


# GET /api/referrals/<id> --------------------------------------------------------------------


def test_get_answers_the_referral_its_targets_and_events(api: ApiClient, clock: FixedClock) -> None:
    referral_id = api.post(weekend_referral()).json["referral_id"]
    clock.advance(timedelta(minutes=1))
    assert api.post(weekend_referral()).status == 200

    answer = api.get(referral_id)

    assert answer.status == 200, answer.text
    detail = answer.json
    assert {k: v for k, v in detail.items() if k not in ("targets", "events")} == {
        "referral_id": referral_id,
        "external_ref": "LCS-2026-000123",
        "category": "domestic_abuse",
        "urgency": "standard",
        "referred_at": "2026-11-14T02:10:00+00:00",
        "received_at": "2026-11-14T10:30:00+00:00",
        "referrer": "edt-amy",
        "source": "api",
        "status": "open",
        "closed_at": None,
        "closed_by": None,
        "close_reason": None,
        "purged_at": None,
        "rota_version": ROTA_VERSION,
        # The referrer is in the EDT (social care); police and health are asked, not answered.
        "coverage": {"social_care": "covered", "police": "pending", "health": "pending"},
    }
    # The case system sent the summary and holds it: the GET never gives it back.
    assert "NARRATIVE-7731" not in answer.text
    assert detail["targets"] == [
        {
            "position": 0,
            "target": "person:hv-jsmith",
            "state": "held",
            "due_at": "2026-11-16T09:00:00+00:00",
            "planned_recipient": "hv-jsmith",
            "planned_via": "self",
            "breached_at": None,
        },
        {
            "position": 1,
            "target": "team:gp-northgate",
            "state": "held",
            "due_at": "2026-11-17T08:00:00+00:00",
            "planned_recipient": "gp-duty1",
            "planned_via": "duty",
            "breached_at": None,
        },
        {
            "position": 2,
            "target": "role:police_dau",
            "state": "held",
            "due_at": "2026-11-14T10:30:00+00:00",
            "planned_recipient": "pc-jones",
            "planned_via": "shift",
            "breached_at": None,
        },
        {
            "position": 3,
            "target": "role:paediatrician",
            "state": "unroutable",
            "due_at": None,
            "planned_recipient": None,
            "planned_via": "unroutable",
            "breached_at": None,
        },
    ]
    assert [e["event"] for e in detail["events"]] == [
        "referral_received",
        "prompt_scheduled",
        "prompt_scheduled",
        "long_gap_alert",
        "prompt_scheduled",
        "unroutable",
        "referral_duplicate",
    ]
    assert detail["events"][1] == {
        "at": "2026-11-14T10:30:00+00:00",
        "event": "prompt_scheduled",
        "actor": None,
        "recipient": "hv-jsmith",
        "target": "person:hv-jsmith",
        "detail": {"due_at": "2026-11-16T09:00:00+00:00", "via": "self", "immediate": False},
    }
    assert detail["events"][-1]["at"] == "2026-11-14T10:31:00+00:00"


def test_get_gives_a_breached_target_the_instant_of_its_breach(
    api: ApiClient, clock: FixedClock, session_factory: sessionmaker[Session]
) -> None:
    referral_id = api.post(weekend_referral()).json["referral_id"]
    breach_at = datetime(2026, 11, 16, 17, 0, tzinfo=UTC)
    with session_factory.begin() as session:
        # As the dispatcher's last escalation step records it (docs/reference/audit-events.md).
        for at in (breach_at, breach_at + timedelta(days=1)):
            audit.record(
                session,
                "breach",
                at=at,
                referral_id=referral_id,
                actor="dispatcher",
                target="person:hv-jsmith",
                detail={"notified": None, "delivered": False},
            )

    targets = {t["target"]: t for t in api.get(referral_id).json["targets"]}

    # The first breach is the one; the state stays as it was (it may still be answered).
    assert targets["person:hv-jsmith"]["breached_at"] == "2026-11-16T17:00:00+00:00"
    assert targets["person:hv-jsmith"]["state"] == "held"
    assert [t["breached_at"] for s, t in targets.items() if s != "person:hv-jsmith"] == [None] * 3


def test_get_must_be_signed_and_names_an_existing_referral(
    api: ApiClient, clock: FixedClock
) -> None:
    referral_id = api.post(weekend_referral()).json["referral_id"]
    assert api.get(referral_id, secret=None).status == 401
    assert api.get(referral_id, secret="guessed").status == 401
    stale = str(int(clock.now().timestamp()) - 301)
    assert api.get(referral_id, timestamp=stale).status == 401
    missing = api.get("HO-0000ZZ")
    assert missing.status == 404
    assert missing.content_type == "application/json"


# The OpenAPI document ----------------------------------------------------------------------


def test_openapi_document_parses_and_matches_the_code() -> None:
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    post = paths["/api/referrals"]["post"]
    get = paths["/api/referrals/{referral_id}"]["get"]
    assert set(post["responses"]) == {"200", "201", "400", "401", "404", "409", "413", "422", "503"}
    assert {"200", "401", "404", "503"} <= set(get["responses"])
    schemas = document["components"]["schemas"]
    request = schemas["ReferralRequest"]
    assert tuple(request["properties"]) == FIELDS
    assert request["additionalProperties"] is False
    assert request["properties"]["category"]["enum"] == list(CATEGORIES)
    assert request["properties"]["urgency"]["enum"] == list(URGENCIES)
    assert request["properties"]["notify"]["minItems"] == 1
    assert request["properties"]["notify"]["maxItems"] == 50
    assert schemas["PlanEntry"]["properties"]["via"]["enum"] == list(Via.__args__)
    assert schemas["Alert"]["properties"]["kind"]["enum"] == list(AlertKind.__args__)
    assert schemas["AuditEvent"]["properties"]["event"]["enum"] == list(AUDIT_EVENTS)
    assert schemas["ReferralDetail"]["properties"]["source"]["enum"] == list(SOURCES)
    schemes = document["components"]["securitySchemes"]
    assert schemes["HandoverSignature"]["name"] == "X-Handover-Signature"
