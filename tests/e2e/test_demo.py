"""`handover demo` as a user runs it: the installed command, in a fresh directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.demo.story import CASE_REF
from tests.e2e.harness import HANDOVER, SAMPLE_ROTA

pytestmark = pytest.mark.slow  # starts processes

# A hostile environment: the demo must not touch any of it (it uses a temporary SQLite file
# and an in-process Slack stand-in on 127.0.0.1).
HOSTILE_ENV = {
    "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/nowhere",
    "SLACK_API_URL": "http://127.0.0.1:9/api/",
    "SLACK_BOT_TOKEN": "xoxb-not-this-one",
    "SLACK_SIGNING_SECRET": "not-this-one",
    "HANDOVER_EDT_CHANNEL": "C0ELSEWHERE",
    "HANDOVER_ESCALATION_CHANNEL": "C0ELSEWHERE",
    "HANDOVER_DISPATCH_INTERVAL": "-1",
    "HANDOVER_CLOCK_FILE": "/nonexistent/clock",
    "PORT": "1",
}


def test_demo_tells_the_whole_weekend_and_writes_the_transcript(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HANDOVER_"))}
    env.update(HOSTILE_ENV)
    started = time.monotonic()
    result = subprocess.run(
        [*HANDOVER, "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, f"{out[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"

    # The story, in order, as people saw it in Slack (rendered, not JSON).
    beats = [
        r"Sat 26 Dec 02:10  Modal opened for Amy Carter \(edt-amy\): .New referral.",
        r"Sat 26 Dec 02:10  Only visible to Amy Carter \(edt-amy\) in #edt-referrals",
        r"Sat 26 Dec 02:10  DM to Raj Malhotra \(edt-mgr-raj\)\n\s+│ NEW REFERRAL: YOU ARE ON CALL",
        r"Sat 26 Dec 02:10  DM to PC Yusuf Ahmed \(pol-pc-ahmed\)",
        r"LONG GAP BEFORE A TARGET CAN BE REACHED",
        r"Sat 26 Dec 02:13  DM of Raj Malhotra \(edt-mgr-raj\): message updated\n(.*\n)*?"
        r"\s+│ ✅ Acknowledged by @Raj Malhotra at Sat 26 Dec 2026 02:13 GMT",
        r"Sat 26 Dec 02:40  \[OK  \] 02:40: Raj acknowledged all six alerts at 02:13",
        r"Monday 28 December 2026",
        r"Tue 29 Dec 08:00  DM to Dr Owen Jones \(gp-drjones\)",
        r"Tue 29 Dec 08:00  Email to Sam Bell <sam.bell@riverside.nhs.example>: .Handover "
        r"referral HO-\w+: please respond.",
        r"I hold information:\n\s+│ \[link to Handover's page /respond/",
        r"Tue 29 Dec 08:12  Modal opened for Dr Owen Jones \(gp-drjones\): .I hold information.",
        r"Tue 29 Dec 08:14  Page seen by Sam Bell \(gp-riv-pm-bell\): .I hold information.",
        r"│ I will contact the social worker by \[ Choose a time ▾\]",
        r"Tue 29 Dec 08:14  Page seen by Sam Bell \(gp-riv-pm-bell\): .Thank you: your answer is "
        r"recorded.",
        r"gp-riv-pm-bell holds information at 08:14; will contact the social worker by today 10:00",
        r"Tue 29 Dec 09:00  DM to Kiran Patel \(hv-kpatel\)",
        r"Tue 29 Dec 09:00  DM to Tessa Ward \(prob-tward\)",
        r"Tue 29 Dec 09:10  DM of Kiran Patel \(hv-kpatel\): message updated",
        r"Tue 29 Dec 09:15  DM to Tessa Ward \(prob-tward\)",  # urgent: +15, +30, +60
        r"Tue 29 Dec 09:30  DM to Declan Walsh \(prob-mgr-walsh\)",
        r"Tue 29 Dec 10:00  #mash-managers",
        r"Tue 29 Dec 17:00  #mash-managers",
        r"Wed 30 Dec 09:05  App Home of Grace Osei \(mash-mgr-osei\)",
        r"handover report",
        r"handover log",
        r"Demo complete",
    ]
    position = 0
    for beat in beats:
        match = re.compile(beat).search(out, position)
        assert match, f"missing, or out of order: {beat!r}\n{out[position : position + 3000]}"
        position = match.end()
    assert "[Acknowledge] [I hold information] [Not known to us] [Someone else holds it]" in out
    assert "[FAIL]" not in out
    assert '"blocks"' not in out and '"type": "section"' not in out  # readable, not JSON
    # Nothing is prompted on the Boxing Day substitute bank holiday.
    monday = out[out.index("Monday 28 December 2026") : out.index("Tuesday 29 December 2026")]
    assert "DM to" not in monday

    # The log and the report at the end.
    for event in ("prompt_sent", "acknowledged", "has_information", "not_known"):
        assert event in out
    for event in ("reminder_sent", "escalated", "escalated_channel", "breach"):
        assert re.search(rf"{event}\s+dispatcher.*person:prob-tward", out), event
    assert "Breaches" in out

    html_path = tmp_path / "demo-transcript.html"
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for text in ("Kiran Patel", "Tessa Ward", CASE_REF, "Acknowledge", "breach", "Demo complete"):
        assert text in page
    assert 'class="timeline"' in page and "<style>" in page
    # The weekend's report as `report --html` draws it, on the same layout: charts, a timeline
    # per referral, in names, local times and words (no ISO times, Slack IDs or timestamps,
    # Python values).
    assert page.count('<svg role="img"') == 5 and 'id="timelines"' in page
    assert "Held for Kiran Patel (hv-kpatel) until Tue 29 Dec 09:00" in page
    words = re.sub(r"<style.*?</style>|<svg.*?</svg>|<[^>]+>", " ", page, flags=re.S)
    for raw in (r"\d{4}-\d\d-\d\dT\d\d", r"\+00:00", r"\bNone\b", r"\{'", r"\b\d{10}\.\d{6}\b"):
        assert not re.search(raw, words), raw

    # The modal has no free text; the story ends with the coverage it really achieved, in
    # words, as the report counts it (docs/coverage.md).
    assert "Summary for the record" not in out
    assert "social care covered, police pending, health covered" in out
    assert re.search(r"police\s+0\s+1\s+0\s+0", out)
    assert "INFORMATION OFFERED" in out
    # No file was left behind but the transcript.
    assert [p.name for p in tmp_path.iterdir()] == ["demo-transcript.html"]


def test_demo_writes_the_transcript_where_asked(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "weekend.html"
    result = subprocess.run(
        [*HANDOVER, "demo", "--html", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Transcript written to {target}" in result.stdout
    assert "Kiran Patel" in target.read_text(encoding="utf-8")


def test_demo_fails_loudly_when_a_step_does_not_happen(tmp_path: Path) -> None:
    # A rota in which the deputy is on leave too: the 09:00 prompt goes to someone else, so
    # the story's "Kiran Patel is prompted at 09:00" does not happen.
    rota = tmp_path / "wexcombe-rota"
    shutil.copytree(SAMPLE_ROTA, rota)
    with open(rota / "absences.csv", "a", encoding="utf-8") as handle:
        handle.write("hv-kpatel,2026-12-29,2026-12-31,annual leave\n")
    html_path = tmp_path / "failed.html"
    code = (
        "import sys, pathlib, bot.demo.story\n"
        f"bot.demo.story.SAMPLE_ROTA = pathlib.Path({str(rota)!r})\n"
        "from bot.cli import main\n"
        f"sys.exit(main(['demo', '--html', {str(html_path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-3000:]
    message = "expected `prompt_sent` for person:hv-jsmith to hv-kpatel at Tue 29 Dec 2026 09:00"
    assert message in result.stderr
    assert "DEMO FAILED" in result.stdout and "[FAIL]" in result.stdout
    page = html_path.read_text(encoding="utf-8")
    assert "DEMO FAILED" in page and 'class="verdict fail"' in page
