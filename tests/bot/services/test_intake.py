"""The intake service: parsing, validation, idempotency and what is written at intake."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, OutboxMessage, Referral, Target
from bot.services import audit, intake
from bot.services.intake import (
    REFERRAL_ID_ALPHABET,
    FieldError,
    InvalidReferral,
    ReferralRequest,
    new_referral_id,
    parse_referral_request,
    receive_referral,
    referral_detail,
    validate_referral,
)
from bot.settings import Settings
from rota.models import Person
from tests.bot.rota_fixtures import ROTA_VERSION, build_rota

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 14, 10, 30, tzinfo=UTC)  # Saturday, GMT
JUNE_SATURDAY = datetime(2026, 6, 13, 9, 0, tzinfo=UTC)  # 10:00 BST
SETTINGS = Settings(api_secret="unused-in-these-tests-but-32-bytes-long", edt_channel="C0EDTCARD")


def valid_data(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "external_ref": "LCS-2026-000123",
        "category": "neglect",
        "urgency": "urgent",
        "referrer": "edt-amy",
        "notify": ["person:hv-jsmith", "role:police_dau"],
        "summary": "kept for the record",
    }
    data.update(changes)
    return data


def field_errors(data: object, now: datetime = NOW) -> list[tuple[str, str]]:
    with pytest.raises(InvalidReferral) as raised:
        parse_referral_request(data, tz=LONDON, now=now)  # type: ignore[arg-type]
    return [(e.field, e.message) for e in raised.value.errors]


# Parsing (no database) ---------------------------------------------------------------------


def test_a_valid_request_is_normalized() -> None:
    request = parse_referral_request(
        valid_data(notify=[" person:hv-jsmith ", "role:police_dau"], referrer=" edt-amy "),
        tz=LONDON,
        now=NOW,
    )
    assert request == ReferralRequest(
        external_ref="LCS-2026-000123",
        category="neglect",
        urgency="urgent",
        referred_at=None,
        referrer="edt-amy",
        notify=("person:hv-jsmith", "role:police_dau"),
        summary="kept for the record",
    )


def test_referred_at_without_offset_is_local_time_across_the_seasons() -> None:
    winter = parse_referral_request(valid_data(referred_at="2026-11-14T02:10"), tz=LONDON, now=NOW)
    assert winter.referred_at == datetime(2026, 11, 14, 2, 10, tzinfo=UTC)
    summer = parse_referral_request(
        valid_data(referred_at="2026-06-13T02:10"), tz=LONDON, now=JUNE_SATURDAY
    )
    assert summer.referred_at == datetime(2026, 6, 13, 1, 10, tzinfo=UTC)
    with_offset = parse_referral_request(
        valid_data(referred_at="2026-06-13T02:10:00+02:00"), tz=LONDON, now=JUNE_SATURDAY
    )
    assert with_offset.referred_at == datetime(2026, 6, 13, 0, 10, tzinfo=UTC)


def test_referred_at_may_be_a_few_minutes_ahead_but_not_more() -> None:
    ahead = (NOW + timedelta(minutes=5)).isoformat()
    assert parse_referral_request(valid_data(referred_at=ahead), tz=LONDON, now=NOW).referred_at
    too_far = (NOW + timedelta(minutes=5, seconds=1)).isoformat()
    assert field_errors(valid_data(referred_at=too_far)) == [("referred_at", "is in the future")]


def test_every_shape_error_is_collected_in_field_order() -> None:
    data = {
        "zz_extra": 1,
        "external_ref": "x" * 65,
        "category": "Neglect",
        "urgency": 1,
        "referred_at": "26/12/2026 02:10",
        "referrer": "",
        "notify": ["person:a", None, "", "person:a", "t" * 141],
        "summary": "s" * 10_001,
    }
    assert field_errors(data) == [
        ("external_ref", "must be 1 to 64 of the characters A-Z a-z 0-9 . _ : / -"),
        ("category", "must be one of " + ", ".join(intake.CATEGORIES)),
        ("urgency", "must be one of urgent, standard"),
        ("referred_at", "must be an ISO 8601 date-time, e.g. 2026-12-26T02:10"),
        ("referrer", "must be a person_id"),
        ("notify[1]", "must be person:ID, team:ID or role:NAME"),
        ("notify[2]", "must be person:ID, team:ID or role:NAME"),
        ("notify[3]", "repeats notify[0] (person:a)"),
        ("notify[4]", "is longer than 140"),
        ("summary", "is longer than 10000 characters"),
        ("zz_extra", "unknown field"),
    ]


def test_required_fields_and_the_size_of_notify() -> None:
    assert field_errors({}) == [
        ("external_ref", "is required"),
        ("category", "is required"),
        ("urgency", "is required"),
        ("referrer", "is required"),
        ("notify", "is required"),
    ]
    assert field_errors(valid_data(notify=[])) == [("notify", "must have 1 to 50 targets")]
    many = [f"person:p{i}" for i in range(51)]
    assert field_errors(valid_data(notify=many)) == [("notify", "must have 1 to 50 targets")]
    assert field_errors(valid_data(notify="person:hv-jsmith")) == [
        ("notify", "must be a list of targets")
    ]
    assert field_errors(["not", "an", "object"]) == [("body", "must be a JSON object")]


@pytest.mark.parametrize(
    "ref", ["LCS-2026-000123", "a", "A.b_c:d/e-f", "9" * 64], ids=["usual", "one", "all", "64"]
)
def test_external_refs_allowed(ref: str) -> None:
    assert parse_referral_request(valid_data(external_ref=ref), tz=LONDON, now=NOW)


@pytest.mark.parametrize("ref", ["", "9" * 65, "LCS 1", "LCS#1", "LCS-1\n", "Ünï"])
def test_external_refs_refused(ref: str) -> None:
    assert [f for f, _ in field_errors(valid_data(external_ref=ref))] == ["external_ref"]


def test_the_request_hash_ignores_notation_but_not_content() -> None:
    def digest(**changes: object) -> str:
        return parse_referral_request(valid_data(**changes), tz=LONDON, now=NOW).request_hash()

    base = digest(referred_at="2026-11-14T02:10")
    assert base == digest(referred_at="2026-11-14T02:10:00+00:00")
    assert base == digest(referred_at="2026-11-14T02:10:00Z")
    assert base != digest(referred_at="2026-11-14T02:11")
    assert base != digest(referred_at="2026-11-14T02:10", summary="changed")
    assert base != digest(referred_at="2026-11-14T02:10", notify=["role:police_dau"])
    # Not giving referred_at is its own content: a retry later is still the same request.
    assert (
        digest()
        == parse_referral_request(
            valid_data(), tz=LONDON, now=NOW + timedelta(hours=1)
        ).request_hash()
    )


def test_referral_ids_use_crockford_base32() -> None:
    ids = {new_referral_id() for _ in range(200)}
    assert len(ids) > 190
    for referral_id in ids:
        assert referral_id.startswith("HO-") and len(referral_id) == 9
        assert set(referral_id[3:]) <= set(REFERRAL_ID_ALPHABET)
    assert not set("ILOU") & set(REFERRAL_ID_ALPHABET)


def test_audit_record_refuses_unknown_events_and_serializes_detail(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        with pytest.raises(ValueError, match="unknown audit event"):
            audit.record(session, "referral_deleted", at=NOW)
        row = audit.record(session, "breach", at=NOW, detail={"b": 1, "a": "é"})
        assert row.detail == '{"b": 1, "a": "é"}'
        with pytest.raises(ValueError, match="aware"):
            audit.record(session, "breach", at=datetime(2026, 1, 1))


# With the rota (both databases) -------------------------------------------------------------


@pytest.fixture
def rota_factory(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    build_rota(session_factory)
    return session_factory


def validate(session: Session, data: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidReferral) as raised:
        validate_referral(session, data, tz=LONDON, now=NOW)
    return [(e.field, e.message) for e in raised.value.errors]


def test_the_rota_decides_who_may_refer_and_who_can_be_notified(
    rota_factory: sessionmaker[Session],
) -> None:
    with rota_factory() as session:
        assert validate(session, valid_data(referrer="edt-old")) == [
            ("referrer", "edt-old is no longer in the rota")
        ]
        assert validate(session, valid_data(referrer="nobody")) == [
            ("referrer", "unknown person nobody")
        ]
        assert validate(session, valid_data(referrer="hv-lead")) == [
            ("referrer", "hv-lead does not have the referrer permission")
        ]
        errors = validate(
            session,
            valid_data(
                urgency="now",
                notify=[
                    "person:ghost",
                    "role:police_dau",
                    "team:gp-x",
                    "role:astronaut",
                    "pager:1",
                ],
            ),
        )
        assert errors[0] == ("urgency", "must be one of urgent, standard")
        assert [field for field, _ in errors[1:]] == [
            "notify[0]",
            "notify[2]",
            "notify[3]",
            "notify[4]",
        ]
        assert errors[1:4] == [
            ("notify[0]", "unknown person ghost"),
            ("notify[2]", "unknown team gp-x"),
            ("notify[3]", "unknown role astronaut"),
        ]
        # edt-mgr is both a referrer and a manager.
        request = validate_referral(session, valid_data(referrer="edt-mgr"), tz=LONDON, now=NOW)
        assert request.referrer == "edt-mgr"


def test_receive_writes_a_slack_referral_in_the_callers_transaction(
    rota_factory: sessionmaker[Session],
) -> None:
    with rota_factory() as session:
        request = validate_referral(session, valid_data(), tz=LONDON, now=NOW)
        result = receive_referral(session, request, now=NOW, settings=SETTINGS, source="slack")
        assert result.status == "created"
        assert result.referral.source == "slack"
        session.rollback()  # intake never commits: the caller's rollback discards everything
    with rota_factory() as session:
        assert session.scalar(select(func.count()).select_from(Referral)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_a_summer_referral_with_an_unroutable_target_and_nobody_on_call(
    rota_factory: sessionmaker[Session],
) -> None:
    with rota_factory.begin() as session:
        request = parse_referral_request(
            valid_data(notify=["person:hv-jsmith", "role:paediatrician"]),
            tz=LONDON,
            now=JUNE_SATURDAY,
        )
        result = receive_referral(session, request, now=JUNE_SATURDAY, settings=SETTINGS)
    assert result.body["plan"] == [
        {
            "target": "person:hv-jsmith",
            "recipient": "hv-jsmith",
            "via": "self",
            "due_at": "2026-06-15T09:00:00+01:00",
            "immediate": False,
        },
        {
            "target": "role:paediatrician",
            "recipient": None,
            "via": "unroutable",
            "due_at": None,
            "immediate": False,
        },
    ]
    assert result.body["alerts"] == [
        {
            "kind": "unroutable",
            "target": "role:paediatrician",
            "recipient": None,
            "detail": "nobody in the chain is at work within 7 days",
        }
    ]
    with rota_factory() as session:
        prompts = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [(p.kind, p.recipient_id, p.address, p.due_at) for p in prompts] == [
            ("card", None, "C0EDTCARD", JUNE_SATURDAY),
            ("prompt", None, None, datetime(2026, 6, 15, 8, 0, tzinfo=UTC)),
            ("unroutable", None, None, JUNE_SATURDAY),
        ]
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [e.event for e in events] == ["referral_received", "prompt_scheduled", "unroutable"]
        assert json.loads(events[1].detail) == {
            "due_at": "2026-06-15T09:00:00+01:00",
            "via": "self",
            "immediate": False,
        }
        assert json.loads(events[0].detail)["referred_at"] == "2026-06-13T10:00:00+01:00"


def test_a_twin_committed_between_lookup_and_insert_is_answered_as_a_duplicate(
    rota_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with rota_factory.begin() as session:
        request = validate_referral(session, valid_data(), tz=LONDON, now=NOW)
        first = receive_referral(session, request, now=NOW, settings=SETTINGS)

    # The lookup misses once, as it would for a twin still uncommitted at that moment: the
    # insert then meets the unique external_ref inside a savepoint, and the row is re-read.
    real_find = intake._find_referral
    lookups: list[str] = []

    def find_missing_once(session: Session, external_ref: str) -> Referral | None:
        lookups.append(external_ref)
        return None if len(lookups) == 1 else real_find(session, external_ref)

    monkeypatch.setattr(intake, "_find_referral", find_missing_once)
    later = NOW + timedelta(seconds=2)
    with rota_factory.begin() as session:
        second = receive_referral(session, request, now=later, settings=SETTINGS)
        assert second.status == "duplicate"
        assert second.body == first.body
        assert len(lookups) == 2  # the insert failed on the unique key and was re-read
        # The savepoint left the transaction usable.
        assert session.execute(text("SELECT 1")).scalar() == 1

    with rota_factory() as session:
        assert session.scalar(select(func.count()).select_from(Referral)) == 1
        events = [e.event for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert events[-1] == "referral_duplicate"
        assert events.count("referral_received") == 1


def test_a_taken_referral_id_is_drawn_again(
    rota_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter(["HO-AAAAAA", "HO-AAAAAA", "HO-BBBBBB"])
    monkeypatch.setattr(intake, "new_referral_id", lambda: next(draws))
    with rota_factory.begin() as session:
        first = receive_referral(
            session,
            parse_referral_request(valid_data(), tz=LONDON, now=NOW),
            now=NOW,
            settings=SETTINGS,
        )
        second = receive_referral(
            session,
            parse_referral_request(valid_data(external_ref="LCS-2"), tz=LONDON, now=NOW),
            now=NOW,
            settings=SETTINGS,
        )
    assert (first.body["referral_id"], second.body["referral_id"]) == ("HO-AAAAAA", "HO-BBBBBB")


def test_a_repeat_is_answered_even_after_the_rota_changed(
    rota_factory: sessionmaker[Session],
) -> None:
    with rota_factory.begin() as session:
        request = validate_referral(session, valid_data(), tz=LONDON, now=NOW)
        first = receive_referral(session, request, now=NOW, settings=SETTINGS)
    with rota_factory.begin() as session:
        session.get(Person, "edt-amy").active = False
    with rota_factory.begin() as session:
        again = validate_referral(session, valid_data(), tz=LONDON, now=NOW)
        second = receive_referral(session, again, now=NOW, settings=SETTINGS)
        assert (second.status, second.body) == ("duplicate", first.body)
        changed = validate_referral(session, valid_data(urgency="standard"), tz=LONDON, now=NOW)
        assert receive_referral(session, changed, now=NOW, settings=SETTINGS).status == "conflict"


def test_receive_checks_the_rota_itself_when_the_caller_did_not(
    rota_factory: sessionmaker[Session],
) -> None:
    request = parse_referral_request(
        valid_data(referrer="edt-bob", notify=["team:gp-x"]), tz=LONDON, now=NOW
    )
    with rota_factory() as session, pytest.raises(InvalidReferral) as raised:
        receive_referral(session, request, now=NOW, settings=SETTINGS)
    assert raised.value.errors == [
        FieldError("referrer", "edt-bob does not have the referrer permission"),
        FieldError("notify[0]", "unknown team gp-x"),
    ]


def test_detail_of_an_unknown_referral_is_none(rota_factory: sessionmaker[Session]) -> None:
    with rota_factory() as session:
        assert referral_detail(session, "HO-ZZZZZZ", LONDON) is None


def test_intake_rows_carry_the_rota_version_and_the_log_stays_append_only(
    rota_factory: sessionmaker[Session],
) -> None:
    with rota_factory.begin() as session:
        request = parse_referral_request(valid_data(), tz=LONDON, now=NOW)
        receive_referral(session, request, now=NOW, settings=SETTINGS)
    with rota_factory() as session:
        versions = session.scalars(select(AuditEvent.rota_version)).all()
        assert versions and set(versions) == {ROTA_VERSION}
        targets = session.scalars(select(Target).order_by(Target.position)).all()
        assert [t.state for t in targets] == ["held", "held"]
    with rota_factory() as session, pytest.raises(DBAPIError):
        session.execute(text("UPDATE audit_log SET actor = 'someone-else'"))


ISO_MESSAGE = "must be an ISO 8601 date-time, e.g. 2026-12-26T02:10"


@pytest.mark.parametrize(
    ("referred_at", "message"),
    [
        pytest.param("2026-12-26", ISO_MESSAGE, id="date-only"),
        pytest.param("2026-W52", ISO_MESSAGE, id="week"),
        pytest.param("2026-W52-6T02:10", ISO_MESSAGE, id="week-date-time"),
        pytest.param("20261226T0210", ISO_MESSAGE, id="basic-format"),
        pytest.param("2026-12-26T02", ISO_MESSAGE, id="hour-only"),
        pytest.param("0001-01-01T00:00:30Z", "is before 2000-01-01", id="year-1"),
        pytest.param("0001-01-01T00:00+01:00", "is before 2000-01-01", id="before-year-1-in-utc"),
        pytest.param("1999-12-31T23:59:59Z", "is before 2000-01-01", id="1999"),
        pytest.param("9999-12-31T23:00-01:00", "is in the future", id="after-9999-in-utc"),
    ],
)
def test_referred_at_needs_a_date_and_a_time_from_2000_on(referred_at: str, message: str) -> None:
    assert field_errors(valid_data(referred_at=referred_at)) == [("referred_at", message)]


def test_referred_at_may_be_the_first_instant_of_2000() -> None:
    request = parse_referral_request(
        valid_data(referred_at="2000-01-01 00:00:00+00:00"), tz=LONDON, now=NOW
    )
    assert request.referred_at == datetime(2000, 1, 1, tzinfo=UTC)


def test_repeated_targets_name_their_first_mention() -> None:
    notify = ["person:a", None, " person:a ", "team:b", "team:b", "person:a"]
    assert intake.repeated_targets(notify) == {2: 0, 4: 3, 5: 0}
    assert [(e.field, e.message, e.code) for e in intake.repeated_target_errors(notify)] == [
        ("notify[2]", "repeats notify[0] (person:a)", intake.REPEATED_TARGET),
        ("notify[4]", "repeats notify[3] (team:b)", intake.REPEATED_TARGET),
        ("notify[5]", "repeats notify[0] (person:a)", intake.REPEATED_TARGET),
    ]
