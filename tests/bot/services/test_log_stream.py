"""`handover log` read as stored (bot/services/log_stream.py) against the row-by-row oracle
(tests/bot/log_oracle.py): byte for byte, for every format, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import column, func, insert, select, table
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from bot.cli.log import csv_cell, write_log
from bot.models import AuditEvent
from bot.services.log_stream import (
    LOG_BATCH,
    InstantText,
    detail_json,
    iter_log_stored,
    json_text,
    local_iso,
)
from bot.services.logbook import LogWindow, detail_value, iter_log, parse_window
from tests.bot.log_oracle import local_time_label, reference_log
from tests.bot.services.test_logbook import build_rota

LONDON = ZoneInfo("Europe/London")
# Both of London's clock changes in 2026: 01:00 UTC on 29 March and on 25 October.
CLOCK_CHANGES = (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC))
# Seconds from a clock change: just before, at, just after, and around the hour either side.
NEAR_A_CHANGE = (-3601, -3600, -1800, -60, -1, 0, 1, 59, 1799, 3599, 3600, 7200)
MICROSECONDS = (0, 0, 0, 1, 500_000, 999_999)
# Past the rows' batches (LOG_BATCH) and the table's 1000 fitted rows.
ROWS = LOG_BATCH + 600
PEOPLE = ("edt-amy", "hv-jo", "pc-pat", "sw-sam", "nobody-known")
# Characters JSON and CSV treat specially, formula starts, and text beyond ASCII.
ALPHABET = "abcXYZ019 ,:;\"\\/\n\r\t\x01\x1f\x7f=+-@'é中😀\u2028"
PLAIN_DETAILS = (
    "",
    "not in chain",
    "{broken",
    "no response by the end of the working day",
    "=HYPERLINK(1)",
    "123",
    "-7",
    "1e5",
    "1.10",
    "-0",
    "NaN",
    "-Infinity",
    '"quoted"',
    "null",
    "true",
    "[]",
    "{}",
    "[1,2, 3]",
    '{"a": 1, "a": 2}',
    ' {"padded": true} ',
    '{"extra": 1} x',
    '\ufeff{"bom": 1}',
    '{"k": "\\u00e9\\ud83d\\ude00\\/"}',
    '{"nested": {"list": [1, 2.50, null, {"deep": []}]}}',
)
FLOATS = (0.1, 1e16, 1e-07, -0.0, 2.5, 1 / 3, 2.0**70, float("nan"), float("inf"))


def random_text(rng: random.Random, longest: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 16, 2**70, rng.randrange(-(10**6), 10**6)))
    if kind == 3:
        return rng.choice(FLOATS)
    if kind in (4, 5):
        return random_text(rng)
    if kind in (6, 7):
        return {random_text(rng, 6): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def random_detail(rng: random.Random) -> str | None:
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice(PLAIN_DETAILS)
    if kind == 2:
        return random_text(rng, 20)  # mostly not JSON: printed as the text itself
    value = {random_text(rng, 6): random_value(rng) for _ in range(rng.randint(0, 4))}
    if kind == 3:
        return json.dumps(value)  # escaped beyond ASCII: printed without the escapes
    if kind == 4:
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False)  # as bot/services/audit.py writes a dict


def random_instant(rng: random.Random, earlier: list[datetime]) -> datetime:
    if earlier and rng.random() < 0.3:
        return rng.choice(earlier[-5:])  # several events at one instant
    if rng.random() < 0.6:
        change = rng.choice(CLOCK_CHANGES)
        at = change + timedelta(seconds=rng.choice(NEAR_A_CHANGE))
    else:  # anywhere in the year, past a local midnight or the year's end
        at = datetime(2025, 12, 31, 23, 30, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(370 * 86400)
        )
    return at + timedelta(microseconds=rng.choice(MICROSECONDS))


def random_rows(seed: int) -> list[dict[str, Any]]:
    """Audit rows in no particular order (the log is read in order of time, then id)."""
    rng = random.Random(seed)
    referrals = [None, "HO-R1", "HO-=2", "HO-é中", 'HO-"q"', "HO-a,b"]
    instants: list[datetime] = []
    rows = []
    for row_id in range(1, ROWS + 1):
        at = random_instant(rng, instants)
        instants.append(at)
        target_kind = rng.randrange(5)
        target = (
            None,
            "",
            f"person:{rng.choice(PEOPLE)}",
            f"role:{random_text(rng, 8)}",
            f"person:{random_text(rng, 8)}",
        )[target_kind]
        rows.append(
            {
                "id": row_id,
                "at": at,
                "referral_id": rng.choice(referrals),
                "event": rng.choice(("prompt_sent", "breach", "-odd", random_text(rng, 10))),
                "actor": rng.choice((None, *PEOPLE, random_text(rng))),
                "recipient": rng.choice((None, *PEOPLE, random_text(rng))),
                "target": target,
                "detail": random_detail(rng),
                "rota_version": 1,
                "prev_id": row_id - 1 or None,
                "prev_hash": "0" * 64,
                "row_hash": "0" * 64,
            }
        )
    rng.shuffle(rows)
    return rows


def fill_log(session_factory: sessionmaker[Session], seed: int) -> None:
    with session_factory.begin() as session:
        build_rota(session)
        session.execute(insert(AuditEvent), random_rows(seed))


WINDOWS = (
    ("everything", None, None, None),
    ("one referral", "HO-é中", None, None),
    ("a referral with no rows", "HO-NONE", None, None),
    ("the spring change's day", None, "2026-03-29", "2026-03-29"),
    ("the autumn change's repeated hour", None, "2026-10-25T01:00", "2026-10-25T01:59:59"),
    ("from the autumn change", "HO-R1", "2026-10-25", None),
)
ZONES = ("Europe/London", "UTC", "Australia/Lord_Howe")  # Lord Howe: +10:30, +11 in summer


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_the_log_read_as_stored_prints_what_the_row_by_row_log_prints(
    session_factory: sessionmaker[Session], fmt: str
) -> None:
    fill_log(session_factory, seed=13)
    with session_factory() as session:
        for zone in ZONES:
            tz = ZoneInfo(zone)
            for name, referral_id, since, until in WINDOWS:
                window = parse_window(since, until, tz, referral_id=referral_id)
                out = io.StringIO()
                count = write_log(session, window, fmt, tz, out)
                expected = reference_log(session, window, fmt, tz)
                assert out.getvalue() == expected, f"{fmt}, {zone}, {name}"
                assert count == len(list(iter_log(session, window)))
        # Split at newlines only: the text holds U+2028, which splitlines() also splits at.
        whole = reference_log(session, LogWindow(), "jsonl", LONDON).split("\n")[:-1]
    assert len(whole) == ROWS
    # The seed gives both sides of both changes, at one instant and with microseconds.
    ats = [json.loads(line)["at"] for line in whole]
    for text in (
        "2026-03-29T00:59:59+00:00",
        "2026-03-29T02:00:00+01:00",
        "2026-10-25T01:59:59+01:00",
        "2026-10-25T01:00:00+00:00",
    ):
        assert any(at.startswith(text) for at in ats), text
    assert any("." in at for at in ats) and any("." not in at for at in ats)
    assert len(set(ats)) < len(ats)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_handover_log_prints_the_oracle_output(
    db_url: str,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
) -> None:
    fill_log(session_factory, seed=26)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("HANDOVER_TIMEZONE", raising=False)
    for options, window in (
        ([], LogWindow()),
        (
            ["--referral", "HO-R1", "--since", "2026-03-29", "--until", "2026-10-25T01:30"],
            parse_window("2026-03-29", "2026-10-25T01:30", LONDON, referral_id="HO-R1"),
        ),
    ):
        assert main(["log", "--format", fmt, *options]) == 0
        with session_factory() as session:
            expected = reference_log(session, window, fmt, LONDON)
        assert capsys.readouterr().out == expected


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_handover_log_into_a_reader_that_leaves_early_exits_0(
    db_url: str, session_factory: sessionmaker[Session], tmp_path: Path, fmt: str
) -> None:
    """`handover log | head -1`: the batches after the reader has gone are not an error."""
    fill_log(session_factory, seed=39)
    with session_factory() as session:
        first = reference_log(session, LogWindow(), fmt, LONDON).split("\n")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOVER_", "SLACK_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "log", "--format", fmt],
        cwd=tmp_path,
        env={**env, "DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().decode() == first + "\n"
    process.stdout.close()  # far more than a pipe's buffer is still to come
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""


@pytest.mark.parametrize(
    ("stored", "printed"),
    [
        (None, None),
        ("null", None),
        ('{"prompt_id": 16, "reason": "referral closed"}', None),
        ('{"a":1,"b":[1.50,2e3]}', '{"a": 1, "b": [1.5, 2000.0]}'),
        ('{"name": "Ren\\u00e9e"}', '{"name": "Renée"}'),
        ('{"a": 1, "a": 2}', '{"a": 2}'),
        (' {"padded": true}\n', '{"padded": true}'),
        ('{"extra": 1} x', '"{\\"extra\\": 1} x"'),
        ("not in chain", '"not in chain"'),
        ("\ufeff{}", '"\ufeff{}"'),
        ("NaN", "NaN"),
        ('"quoted"', '"quoted"'),
        ("", '""'),
    ],
)
def test_a_detail_prints_as_json_dumps_of_its_value(
    stored: str | None, printed: str | None
) -> None:
    expected = printed if printed is not None or stored in (None, "null") else stored
    assert detail_json(stored) == expected
    value = detail_value(stored)
    assert expected == (None if value is None else json.dumps(value, ensure_ascii=False))
    assert json_text(value) == json.dumps(value, ensure_ascii=False)


# Flat objects near the text that prints as itself, and just outside it.
FLAT_DETAILS = (
    "{}",
    '{"": ""}',
    '{"a": 1, "a": 2}',
    '{"a": 1, "b": 2, "a": 1}',
    '{"a": ": ", "b": ", \\"c\\": "}',
    '{"a": "\\"b\\": 1"}',
    '{"a": "", "b": ""}',
    '{"a": -0}',
    '{"a": 0, "b": -1, "c": 10}',
    '{"a": 01}',
    '{"a": 1.0}',
    '{"a": 1e3}',
    '{"a": NaN}',
    '{"a": true, "b": false, "c": null}',
    '{"a": True}',
    '{"a":1}',
    '{"a" : 1}',
    '{"a": 1,"b": 2}',
    '{"a": 1} ',
    '{"a": {"b": 1}}',
    '{"a": [1]}',
    '{"é中😀\u2028\x7f": "é中😀\u2028\x7f"}',
    '{"a": "\\u00e9"}',
    '{"a": "\\/"}',
    '{"a": "tab\there"}',
    '{"a": "\x1f"}',
    '{"big": ' + "9" * 100 + "}",
    '{"big": -' + "9" * 100 + "}",
    '{"big": ' + "9" * 101 + "}",
    '{"big": ' + "9" * 4301 + "}",
)


@pytest.mark.parametrize("stored", FLAT_DETAILS)
def test_a_flat_detail_prints_as_json_dumps_of_its_value(stored: str) -> None:
    value = detail_value(stored)
    assert detail_json(stored) == json.dumps(value, ensure_ascii=False)


def test_random_flat_details_print_as_json_dumps_of_their_values() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        members = [
            (
                random_text(rng, 4),
                rng.choice((None, True, False, 0, -3, 2**70, 0.5, random_text(rng, 6))),
            )
            for _ in range(rng.randint(0, 4))
        ]
        members += rng.sample(members, min(len(members), rng.randint(0, 1)))  # a key again
        stored = "{" + ", ".join(f"{json_text(k)}: {json_text(v)}" for k, v in members) + "}"
        assert detail_json(stored) == json.dumps(detail_value(stored), ensure_ascii=False), stored


def test_a_detail_as_its_writer_prints_it_is_printed_without_being_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unread(stored: str) -> Any:
        raise AssertionError(f"{stored!r} was read")

    monkeypatch.setattr("bot.services.log_stream.stored_detail_value", unread)
    for detail in ({"prompt_id": 16, "reason": "referral closed"}, {"bench": True}, {}):
        stored = json.dumps(detail, ensure_ascii=False)  # as bot/services/audit.py writes it
        assert detail_json(stored) == stored


# Instants where InstantText's shortcut for a UTC hour must step aside or stop: London's and
# Lord Howe's clock changes (Lord Howe's at 15:30 UTC, within an hour, to an offset of +11 from
# +10:30), Kathmandu's +05:45, a year before 1000, and the last hour a datetime holds.
AWKWARD_INSTANTS = (
    *(change + timedelta(seconds=s) for change in CLOCK_CHANGES for s in NEAR_A_CHANGE),
    *(
        datetime(2026, 4, 4, 15, 30, tzinfo=UTC) + timedelta(seconds=s)  # Lord Howe: +11 → +10:30
        for s in (-1801, -1, 0, 1, 1799, 1800)
    ),
    *(
        datetime(2026, 10, 3, 15, 30, tzinfo=UTC) + timedelta(seconds=s)  # Lord Howe: +10:30 → +11
        for s in (-1801, -1, 0, 1, 1799, 1800)
    ),
    datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(1000, 1, 1, 0, 0, 1, tzinfo=UTC),
    datetime(1000, 1, 1, 0, 30, 0, 7, tzinfo=UTC),
    datetime(9999, 12, 31, 9, 0, 0, 1, tzinfo=UTC),
)


def seconds_text(instant: datetime) -> str:
    """'2026-01-05 18:00:00': SQLite's text of a UTC instant without its fraction."""
    return instant.replace(tzinfo=None).isoformat(" ", "seconds")


@pytest.mark.parametrize("zone", ["Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"])
def test_instant_text_is_the_long_way_text_of_every_stored_instant(
    session_factory: sessionmaker[Session], zone: str
) -> None:
    tz = ZoneInfo(zone)
    rows = [
        {
            "id": row_id,
            "at": at + timedelta(microseconds=micro),
            "event": "bench",
            "rota_version": 1,
            "prev_hash": "0" * 64,
            "row_hash": "0" * 64,
        }
        for row_id, (at, micro) in enumerate(
            ((at, micro) for at in AWKWARD_INSTANTS for micro in (0, 1, 999_999)), start=1
        )
    ]
    with session_factory.begin() as session:
        if session.get_bind().dialect.name == "sqlite":
            # Text SQLAlchemy would not write (no fraction), through an untyped table: read the
            # long way, still exact.
            plain = [row for row in rows if row["id"] % 5]
            untyped = table("audit_log", *(column(name) for name in rows[0]))
            session.execute(
                insert(untyped),
                [{**row, "at": seconds_text(row["at"])} for row in rows if not row["id"] % 5],
            )
            session.execute(insert(AuditEvent), plain)
        else:
            session.execute(insert(AuditEvent), rows)
    with session_factory() as session:
        stored = [at for at, *_ in iter_log_stored(session, LogWindow())]
        instants = [row.at for row in iter_log(session, LogWindow())]
        iso, label = InstantText(session, tz), InstantText(session, tz, label=True)
        printed = [(iso(s), label(s)) for s in stored]
    assert len(printed) == len(rows)
    assert printed == [(local_iso(i, tz), local_time_label(i, tz)) for i in instants]


@pytest.mark.parametrize(
    "value",
    [True, False, None, 0, -1, 16, 2**70, -(10**30), 0.1, -0.0, float("nan"), float("-inf"),
     "", "é\u2028\"", [], {}, [True, None, 1], {"a": {"b": [False, 2.5]}}],
)  # fmt: skip
def test_json_text_is_json_dumps(value: Any) -> None:
    assert json_text(value) == json.dumps(value, ensure_ascii=False)


def test_a_csv_cell_is_what_csv_writer_writes_of_it() -> None:
    # Every character of the Basic Multilingual Plane (surrogates aside) and beyond it, alone,
    # at either end and in the middle of a cell, in a row of two cells as in a line of the log.
    characters = [chr(c) for c in range(0x10000) if not 0xD800 <= c < 0xE000] + ["😀", "𝄞"]
    for character in characters:
        for cell in (character, f"{character}a", f"a{character}", f"a{character}{character}b"):
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow([cell, cell])
            assert f"{csv_cell(cell)},{csv_cell(cell)}\n" == out.getvalue(), repr(cell)
    assert csv_cell("") == ""


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_log_is_read_through_a_server_side_cursor_on_postgresql(
    session_factory: sessionmaker[Session],
) -> None:
    """Never the whole log in memory: the rows come a batch at a time from a cursor on the
    server, which is closed when the reader stops early."""
    fill_log(session_factory, seed=52)
    with session_factory() as session:
        open_cursors = select(func.count()).select_from(table("pg_cursors"))
        rows = iter_log_stored(session, LogWindow())
        assert len(next(rows)) == 7
        assert session.scalar(open_cursors) == 1
        rows.close()
        assert session.scalar(open_cursors) == 0
