"""Generate rota CSV files: the Wexcombe sample rota, or a large synthetic one for benchmarks.

    python benchmarks/gen_rota.py --sample                 # rewrites rota/sample/*.csv
    python benchmarks/gen_rota.py --people 20000 --shifts 1000000 --out /tmp/big-rota

Both are deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import holidays

from rota.importer import COLUMNS, OPTIONAL_COLUMNS  # the header of each file

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "rota" / "sample"

# The sample rota covers these dates (Christmas 2026, Easter 2027 and 12 July 2027 included).
SAMPLE_FIRST_DAY = date(2026, 11, 1)
SAMPLE_LAST_DAY = date(2027, 12, 31)
CHRISTMAS_EVE_CLOSE = time(12, 0)  # the 'all' closure on Christmas Eve afternoon

SAMPLE_TEAMS = [
    # team_id, name, agency, agency_type, region, hours, manager, channel
    ("edt", "Wexcombe Emergency Duty Team", "Wexcombe County Council", "social_care", "england",
     "none", "edt-mgr-raj", "C0EDTCARDS"),
    ("mash", "Wexcombe MASH", "Wexcombe County Council", "social_care", "england",
     "Mon-Thu 08:30-17:00; Fri 08:30-16:30", "mash-mgr-osei", "C0MASHDUTY"),
    ("hv-north", "Health Visiting North", "Wexcombe Community Health NHS Trust", "health",
     "england", "Mon-Fri 09:00-17:00", "hv-mgr-lee", "C0HVNORTH1"),
    ("gp-northgate", "Northgate Surgery", "Northgate Surgery", "health", "england",
     "Mon-Fri 08:00-18:00", "gp-mgr-okoro", "C0GPNGATE1"),
    ("gp-riverside", "Riverside Medical Practice", "Riverside Medical Practice", "health",
     "england", "Mon-Fri 08:00-18:30", "gp-riv-pm-bell", ""),
    ("maternity", "Wexcombe General midwifery", "Wexcombe Hospitals NHS Foundation Trust",
     "health", "england", "", "mat-mgr-adeyemi", "C0MATERNTY"),
    ("probation-north", "Probation North Wexcombe", "Probation Service", "probation", "england",
     "", "prob-mgr-walsh", ""),
    ("police-dau", "Domestic Abuse Unit", "Wexcombe Constabulary", "police", "england", "none",
     "pol-insp-clarke", "C0POLDAU01"),
    ("school-oakfield", "Oakfield Primary School", "Oakfield Primary School", "education",
     "england", "Mon-Fri 08:30-16:00", "sch-head-price", ""),
    ("hv-fife", "Health Visiting Fife", "NHS Fife", "health", "scotland", "", "hv-fife-mcleod",
     "C0HVFIFE01"),
    ("hv-belfast", "Health Visiting Belfast", "Belfast Health and Social Care Trust", "health",
     "northern_ireland", "", "hv-bel-quinn", "C0HVBELF01"),
]  # fmt: skip

SAMPLE_PEOPLE = [
    # person_id, name, slack_user, email, team_id, role, hours, deputy, permissions (contact:
    # SAMPLE_CONTACT)
    ("edt-amy", "Amy Carter", "U0EDTAMY01", "amy.carter@wexcombe.example", "edt",
     "EDT social worker", "none", "", "referrer"),
    ("edt-ben", "Ben Okafor", "U0EDTBEN01", "ben.okafor@wexcombe.example", "edt",
     "EDT social worker", "none", "", "referrer"),
    ("edt-cara", "Cara Nolan", "U0EDTCAR01", "cara.nolan@wexcombe.example", "edt",
     "EDT social worker", "none", "", "referrer"),
    ("edt-mgr-raj", "Raj Malhotra", "U0EDTRAJ01", "raj.malhotra@wexcombe.example", "edt",
     "EDT manager", "none", "", "referrer;manager"),
    ("edt-mgr-sue", "Sue Whitfield", "U0EDTSUE01", "sue.whitfield@wexcombe.example", "edt",
     "EDT manager", "none", "", "referrer;manager"),
    ("mash-mgr-osei", "Grace Osei", "U0MASHGO01", "grace.osei@wexcombe.example", "mash",
     "MASH team manager", "", "", "referrer;manager"),
    ("mash-tkelly", "Tom Kelly", "U0MASHTK01", "tom.kelly@wexcombe.example", "mash",
     "MASH social worker", "", "mash-mgr-osei", "referrer"),
    ("hv-jsmith", "Jo Smith", "U0HVJSMI01", "jo.smith@wexcombe.example", "hv-north",
     "health visitor", "Mon-Wed 09:00-17:00", "hv-kpatel", ""),
    ("hv-kpatel", "Kiran Patel", "U0HVKPAT01", "kiran.patel@wexcombe.example", "hv-north",
     "health visitor", "", "hv-jsmith", ""),
    ("hv-mgr-lee", "Morgan Lee", "U0HVMLEE01", "morgan.lee@wexcombe.example", "hv-north",
     "health visiting team leader", "", "", "manager"),
    ("gp-drshah", "Dr Priya Shah", "U0GPSHAH01", "priya.shah@wexcombe.example", "gp-northgate",
     "GP safeguarding lead", "", "gp-drjones", ""),
    ("gp-drjones", "Dr Owen Jones", "", "owen.jones@wexcombe.example", "gp-northgate",
     "GP partner", "Mon-Thu 08:00-18:00", "gp-drshah", ""),
    ("gp-mgr-okoro", "Chidi Okoro", "U0GPOKOR01", "chidi.okoro@wexcombe.example",
     "gp-northgate", "practice manager", "", "", "manager"),
    ("gp-riv-pm-bell", "Sam Bell", "", "sam.bell@riverside.nhs.example", "gp-riverside",
     "practice manager", "", "", "manager"),
    ("mw-rhughes", "Rhiannon Hughes", "U0MWRHUG01", "rhiannon.hughes@wexcombe.example",
     "maternity", "community midwife", "Mon-Fri 08:00-16:00", "mat-mgr-adeyemi", ""),
    ("mat-mgr-adeyemi", "Funmi Adeyemi", "U0MATADE01", "funmi.adeyemi@wexcombe.example",
     "maternity", "community midwifery manager", "", "", "manager"),
    ("prob-tward", "Tessa Ward", "U0PRTWAR01", "tessa.ward@wexcombe.example", "probation-north",
     "probation officer", "", "prob-mgr-walsh", ""),
    ("prob-mgr-walsh", "Declan Walsh", "U0PRDWAL01", "declan.walsh@wexcombe.example",
     "probation-north", "senior probation officer", "", "", "manager"),
    ("pol-sgt-evans", "Sgt Carys Evans", "U0POLEVA01", "carys.evans@wexcombe.example",
     "police-dau", "DAU sergeant", "none", "", ""),
    ("pol-dc-khan", "DC Imran Khan", "U0POLKHA01", "imran.khan@wexcombe.example", "police-dau",
     "detective constable", "none", "", ""),
    ("pol-dc-hale", "DC Megan Hale", "U0POLHAL01", "megan.hale@wexcombe.example", "police-dau",
     "detective constable", "none", "", ""),
    ("pol-pc-ahmed", "PC Yusuf Ahmed", "U0POLAHM01", "yusuf.ahmed@wexcombe.example",
     "police-dau", "police constable", "none", "", ""),
    ("pol-insp-clarke", "Insp Helen Clarke", "U0POLCLA01", "helen.clarke@wexcombe.example",
     "police-dau", "DAU inspector", "", "", "manager"),
    ("sch-dsl-moore", "Hannah Moore", "U0SCHMOO01", "hannah.moore@wexcombe.example",
     "school-oakfield", "designated safeguarding lead", "", "sch-head-price", ""),
    ("sch-head-price", "Daniel Price", "U0SCHPRI01", "daniel.price@wexcombe.example",
     "school-oakfield", "headteacher", "", "", "manager"),
    ("hv-fife-mcleod", "Isla McLeod", "U0FIFMCL01", "isla.mcleod@fife.example", "hv-fife",
     "health visiting team leader", "", "", "manager"),
    ("hv-fife-boyd", "Callum Boyd", "U0FIFBOY01", "callum.boyd@fife.example", "hv-fife",
     "health visitor", "Mon-Thu 09:00-17:00", "hv-fife-mcleod", ""),
    ("hv-bel-quinn", "Siobhan Quinn", "U0BELQUI01", "siobhan.quinn@belfast.example",
     "hv-belfast", "health visiting team leader", "", "", "manager"),
    ("hv-bel-doherty", "Ciaran Doherty", "U0BELDOH01", "ciaran.doherty@belfast.example",
     "hv-belfast", "health visitor", "", "hv-bel-quinn", ""),
]  # fmt: skip

# people.csv's optional `contact` column; everyone else is reached in Slack (the default).
# Riverside Medical Practice is on NHSmail, not on the council's Slack.
SAMPLE_CONTACT = {"gp-riv-pm-bell": "email"}
# people.csv's optional `phone` column: work phones shown to the social worker who must call back.
SAMPLE_PHONE = {
    "hv-jsmith": "01632 960 101",
    "hv-kpatel": "01632 960 102",
    "gp-drshah": "01632 960 210",
    "mw-rhughes": "01632 960 330",
    "prob-tward": "01632 960 440",
    "sch-dsl-moore": "01632 960 550",
}
# EDT and MASH managers read every referral (need to know: the others see their teams').
SAMPLE_OVERSIGHT = frozenset({"edt-mgr-raj", "edt-mgr-sue", "mash-mgr-osei"})

SAMPLE_ABSENCES = [
    ("hv-jsmith", "2026-12-21", "2027-01-08", "annual leave"),
    ("hv-fife-boyd", "2026-12-24", "2027-01-05", "annual leave"),
    ("mw-rhughes", "2027-04-05", "2027-04-09", "annual leave"),
    ("prob-tward", "2027-07-05", "2027-07-16", "annual leave"),
    ("hv-kpatel", "2027-08-16", "2027-08-27", "annual leave"),
]

# Oakfield Primary's school holidays (first and last weekday closed, inclusive).
OAKFIELD_HOLIDAYS = [
    ("2026-12-19", "2027-01-04", "Christmas holidays"),
    ("2027-02-15", "2027-02-19", "February half term"),
    ("2027-03-29", "2027-04-09", "Easter holidays"),
    ("2027-05-31", "2027-06-04", "May half term"),
    ("2027-07-22", "2027-09-01", "summer holidays"),
    ("2027-10-25", "2027-10-29", "October half term"),
    ("2027-12-20", "2027-12-31", "Christmas holidays"),
]


def _english_bank_holidays() -> set[date]:
    return set(holidays.country_holidays("GB", subdiv="ENG", years=range(2026, 2029)))


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _local(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M")


def _working_periods(first: date, last: date, bank_holidays: set[date]) -> list[tuple]:
    """The county's office hours: weekdays 09:00-17:00, not bank holidays, Christmas Eve to noon."""
    periods = []
    for day in _days(first, last):
        if day.weekday() >= 5 or day in bank_holidays:
            continue
        close = CHRISTMAS_EVE_CLOSE if (day.month, day.day) == (12, 24) else time(17, 0)
        periods.append((datetime.combine(day, time(9, 0)), datetime.combine(day, close)))
    return periods


def sample_shifts() -> list[tuple[str, str, str, str]]:
    """The sample's shifts: EDT manager and worker out of hours, the police desk, GP duty."""
    bank_holidays = _english_bank_holidays()
    periods = _working_periods(date(2026, 10, 26), date(2028, 1, 14), bank_holidays)
    rows: list[tuple[str, str, str, str]] = []

    # Out of hours is every gap between two working periods (weekday nights, weekends and
    # bank holidays as one long shift), starting from the Friday before the first day.
    gaps = [
        (end, next_start)
        for (_, end), (next_start, _) in itertools.pairwise(periods)
        if date(2026, 10, 30) <= end.date() <= SAMPLE_LAST_DAY
    ]
    reference_monday = date(2026, 10, 26)
    managers = ("edt-mgr-raj", "edt-mgr-sue")
    for start, end in gaps:
        week = (start.date() - reference_monday).days // 7
        rows.append((managers[week % 2], "edt_manager", _local(start), _local(end)))

    # EDT workers take the same hours in pieces cut at 09:00 and 17:00, in turn.
    workers = ("edt-amy", "edt-ben", "edt-cara")
    turn = 0
    for start, end in gaps:
        piece_start = start
        while piece_start < end:
            cuts = [
                datetime.combine(piece_start.date() + timedelta(days=d), t)
                for d in (0, 1)
                for t in (time(9, 0), time(17, 0))
            ]
            piece_end = min([c for c in cuts if c > piece_start] + [end])
            rows.append((workers[turn % 3], "edt_worker", _local(piece_start), _local(piece_end)))
            turn += 1
            piece_start = piece_end

    # The police domestic abuse desk: around the clock in 12-hour shifts, four officers.
    officers = ("pol-sgt-evans", "pol-dc-khan", "pol-dc-hale", "pol-pc-ahmed")
    turn = 0
    for day in _days(SAMPLE_FIRST_DAY - timedelta(days=1), SAMPLE_LAST_DAY):
        for hour in (7, 19):
            start = datetime.combine(day, time(hour, 0))
            end = start + timedelta(hours=12)
            rows.append((officers[turn % 4], "police_dau", _local(start), _local(end)))
            turn += 1

    # Northgate Surgery's duty doctor: weekdays 08:00-18:00, not on bank holidays.
    doctors = ("gp-drshah", "gp-drjones")
    turn = 0
    for day in _days(SAMPLE_FIRST_DAY, SAMPLE_LAST_DAY):
        if day.weekday() >= 5 or day in bank_holidays:
            continue
        close = CHRISTMAS_EVE_CLOSE if (day.month, day.day) == (12, 24) else time(18, 0)
        start, end = datetime.combine(day, time(8, 0)), datetime.combine(day, close)
        rows.append((doctors[turn % 2], "duty:gp-northgate", _local(start), _local(end)))
        turn += 1
    return rows


def sample_closures() -> list[tuple[str, str, str, str, str]]:
    """Christmas Eve afternoons, MASH's New Year's Eve close-down and Oakfield's holidays."""
    rows = [
        ("2026-12-24", "all", "12:00", "", "Christmas Eve afternoon"),
        ("2026-12-31", "mash", "13:00", "", "MASH festive close-down"),
        ("2027-12-24", "all", "12:00", "", "Christmas Eve afternoon"),
    ]
    for first, last, reason in OAKFIELD_HOLIDAYS:
        for day in _days(date.fromisoformat(first), date.fromisoformat(last)):
            if day.weekday() < 5:
                rows.append((day.isoformat(), "school-oakfield", "", "", reason))
    return sorted(rows)


def _write(out: Path, kind: str, rows, optional: tuple[str, ...] = ()) -> int:
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with (out / f"{kind}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS[kind] + optional)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def write_sample(out: Path = SAMPLE_DIR) -> dict[str, int]:
    """Write the Wexcombe sample rota to `out`; returns the rows written per kind."""
    return {
        "teams": _write(out, "teams", SAMPLE_TEAMS),
        "people": _write(
            out,
            "people",
            [
                (
                    *row[:8],
                    f"{row[8]};oversight" if row[0] in SAMPLE_OVERSIGHT else row[8],
                    SAMPLE_CONTACT.get(row[0], ""),
                    SAMPLE_PHONE.get(row[0], ""),
                )
                for row in SAMPLE_PEOPLE
            ],
            OPTIONAL_COLUMNS["people"],
        ),
        "shifts": _write(out, "shifts", sample_shifts()),
        "absences": _write(out, "absences", SAMPLE_ABSENCES),
        "closures": _write(out, "closures", sample_closures()),
    }


AGENCY_TYPES = ("social_care", "police", "health", "probation", "education", "other")
HOURS = ("", "Mon-Fri 08:30-16:30", "Mon-Thu 08:30-16:30; Fri 08:30-16:00", "none")


def _slack_id(prefix: str, number: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            break
    return prefix + "0" + text.rjust(8, "0")


def write_large(out: Path, people: int, shifts: int, seed: int = 2026) -> dict[str, int]:
    """A synthetic rota of `people` people and `shifts` shifts, valid for import."""
    rng = random.Random(seed)
    team_count = max(10, people // 40)
    teams = [f"team-{t:05d}" for t in range(team_count)]
    person_ids = [f"p-{p:06d}" for p in range(people)]

    def team_of(p: int) -> int:
        return p % team_count

    team_rows = (
        (
            team_id,
            f"Team {t}",
            f"Agency {t % 37}",
            AGENCY_TYPES[t % len(AGENCY_TYPES)],
            "england" if t % 10 else ("scotland", "wales", "northern_ireland")[t // 10 % 3],
            HOURS[t % len(HOURS)],
            person_ids[t] if t < people else "",
            _slack_id("C", t) if t % 3 else "",
        )
        for t, team_id in enumerate(teams)
    )
    person_rows = (
        (
            person_id,
            f"Person {p}",
            _slack_id("U", p) if p % 7 else "",
            f"person.{p}@example.org",
            teams[team_of(p)],
            "practitioner" if p >= team_count else "team manager",
            HOURS[p % len(HOURS)] if p % 5 == 0 else "",
            person_ids[p + team_count] if p + team_count < people else "",
            "referrer;manager" if p < team_count else ("referrer" if p % 11 == 0 else ""),
        )
        for p, person_id in enumerate(person_ids)
    )

    # Each shift-working person works one 12-hour shift a day, from their own start hour,
    # so shifts of one person never overlap; a year is about 400 shifts each.
    staff = max(1, min(people, -(-shifts // 400)))
    base = datetime(2026, 11, 1)

    def shift_rows() -> Iterator[tuple[str, str, str, str]]:
        for i in range(shifts):
            p, k = i % staff, i // staff
            start = base + timedelta(days=k, hours=p % 24)
            role = f"duty:{teams[team_of(p)]}" if p % 5 == 0 else f"oncall_{p % 40}"
            yield person_ids[p], role, _local(start), _local(start + timedelta(hours=12))

    def absence_rows() -> Iterator[tuple[str, str, str, str]]:
        for p in range(0, people, 10):
            first = date(2026, 11, 2) + timedelta(days=rng.randrange(400))
            last = first + timedelta(days=rng.randrange(14))
            yield person_ids[p], first.isoformat(), last.isoformat(), "annual leave"

    def closure_rows() -> Iterator[tuple[str, str, str, str, str]]:
        for t, team_id in enumerate(teams[:500]):
            day = date(2026, 12, 1) + timedelta(days=t % 30)
            yield day.isoformat(), team_id, "12:00", "", "team closure"
        yield "2026-12-24", "all", "12:00", "", "Christmas Eve afternoon"

    return {
        "teams": _write(out, "teams", team_rows),
        "people": _write(out, "people", person_rows),
        "shifts": _write(out, "shifts", shift_rows()),
        "absences": _write(out, "absences", absence_rows()),
        "closures": _write(out, "closures", closure_rows()),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line of the generator."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample", action="store_true", help="write the Wexcombe sample rota")
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--shifts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--out", type=Path, help="output folder (default rota/sample/ for --sample)"
    )
    args = parser.parse_args(argv)
    if args.sample:
        counts = write_sample(args.out or SAMPLE_DIR)
    else:
        if args.out is None:
            parser.error("--out is required for a synthetic rota")
        counts = write_large(args.out, args.people, args.shifts, args.seed)
    for kind, count in counts.items():
        print(f"{kind}: {count} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
