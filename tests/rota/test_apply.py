"""Applying a rota batch: counts and versions, all-or-nothing, diffs, deactivation, dry runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from rota.apply import apply_rota
from rota.importer import RotaImportError, read_rota_files
from rota.models import Closure, Person, Shift, Team
from tests.rota.test_importer import (
    BASE,
    LONDON,
    NOW,
    PEOPLE,
    SHIFTS,
    TEAMS,
    import_folder,
    snapshot,
    with_workspace,
    write_rota,
)


def test_success_counts_and_version(tmp_path: Path, session_factory) -> None:
    folder = write_rota(tmp_path / "rota", **BASE)
    result = import_folder(session_factory, [folder])
    assert result.counts == {
        "teams": {"added": 2, "updated": 0, "deactivated": 0, "unchanged": 0},
        "people": {"added": 5, "updated": 0, "deactivated": 0, "unchanged": 0},
        "shifts": {"added": 3, "removed": 0, "unchanged": 0},
        "absences": {"added": 1, "removed": 0, "unchanged": 0},
        "closures": {"added": 3, "removed": 0, "unchanged": 0},
    }
    assert result.lines()[-1] == "rota version 1"
    with session_factory() as session:
        closures = session.execute(
            select(Closure.date, Closure.applies_to, Closure.from_time, Closure.to_time).order_by(
                Closure.date
            )
        ).all()
        person = session.get(Person, "hv-jsmith")
    assert [(c.applies_to, c.from_time, c.to_time) for c in closures] == [
        ("all", time(12, 0), None),
        ("hv-north", time(13, 0), time(17, 0)),
        ("england", None, None),
    ]
    assert (person.slack_user, person.email, person.permissions) == (
        None,
        "jo.smith@wexcombe.example",
        "",
    )


def test_a_second_import_of_the_same_files_changes_nothing(tmp_path: Path, session_factory) -> None:
    folder = write_rota(tmp_path / "rota", **BASE)
    import_folder(session_factory, [folder])
    before = snapshot(session_factory)
    result = import_folder(session_factory, [folder], now=datetime(2026, 11, 27, tzinfo=UTC))
    assert not result.changed
    assert result.version == 1
    assert result.lines()[-1] == "no changes; rota version 1"
    assert snapshot(session_factory) == before


def test_a_failed_import_leaves_the_rota_exactly_as_it_was(tmp_path: Path, session_factory) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "good", **BASE)])
    before = snapshot(session_factory)
    # Valid on their own; the shift names a person neither in the files nor in the store,
    # which only the check inside apply_rota's transaction can see.
    bad = write_rota(
        tmp_path / "bad",
        teams=TEAMS + "t1,Team,Agency,health,england,,,\n",
        shifts=SHIFTS + "ghost,edt_worker,2026-12-27T09:00,2026-12-27T17:00\n",
    )
    batch = read_rota_files([bad], LONDON)
    with pytest.raises(RotaImportError) as caught, session_factory.begin() as session:
        apply_rota(session, batch, NOW)
    assert [str(p) for p in caught.value.problems] == [
        f"{bad / 'shifts.csv'}:5: person_id: unknown person 'ghost'"
    ]
    assert snapshot(session_factory) == before


def test_a_failure_while_writing_rolls_back_everything(tmp_path: Path, session_factory) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "good", **BASE)])
    before = snapshot(session_factory)
    folder = write_rota(
        tmp_path / "new",
        teams=TEAMS + "t1,Team,Agency,health,england,,,\n",
        shifts=SHIFTS + "edt-amy,edt_worker,2026-12-27T09:00,2026-12-27T17:00\n",
    )
    batch = read_rota_files([folder], LONDON)
    with pytest.raises(RuntimeError), session_factory.begin() as session:
        apply_rota(session, batch, NOW)
        raise RuntimeError("the caller's transaction fails after apply_rota")
    assert snapshot(session_factory) == before


def test_people_missing_from_a_new_people_csv_are_deactivated_not_deleted(
    tmp_path: Path, session_factory
) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    without_amy = "".join(line for line in PEOPLE.splitlines(True) if "edt-amy" not in line)
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", people=without_amy)])
    assert result.counts == {"people": {"added": 0, "updated": 0, "deactivated": 1, "unchanged": 4}}
    assert result.version == 2
    with session_factory() as session:
        amy = session.get(Person, "edt-amy")
        assert amy is not None and amy.active is False
        assert (
            session.scalar(select(Shift.person_id).where(Shift.role == "edt_worker")) == "edt-amy"
        )
    # Back in a later file: reactivated as an update.
    result = import_folder(session_factory, [write_rota(tmp_path / "v3", people=PEOPLE)])
    assert result.counts["people"] == {"added": 0, "updated": 1, "deactivated": 0, "unchanged": 4}
    with session_factory() as session:
        assert session.get(Person, "edt-amy").active is True


def test_teams_missing_from_a_new_teams_csv_are_deactivated(
    tmp_path: Path, session_factory
) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    teams = TEAMS + "gp-northgate,Northgate Surgery,Northgate Surgery,health,england,,,\n"
    teams = "".join(line for line in teams.splitlines(True) if not line.startswith("hv-north"))
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", teams=teams)])
    assert result.counts == {"teams": {"added": 1, "updated": 0, "deactivated": 1, "unchanged": 1}}
    with session_factory() as session:
        assert session.get(Team, "hv-north").active is False
        assert session.get(Team, "gp-northgate").active is True


def test_shifts_are_replaced_as_a_diff_keeping_unchanged_rows(
    tmp_path: Path, session_factory
) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    with session_factory() as session:
        ids_before = dict(session.execute(select(Shift.role, Shift.id)).tuples().all())
    moved = SHIFTS.replace("2026-12-26T09:00,2026-12-26T17:00", "2026-12-27T09:00,2026-12-27T17:00")
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", shifts=moved)])
    assert result.counts == {"shifts": {"added": 1, "removed": 1, "unchanged": 2}}
    with session_factory() as session:
        ids_after = dict(session.execute(select(Shift.role, Shift.id)).tuples().all())
        worker = session.scalars(select(Shift).where(Shift.role == "edt_worker")).one()
    assert ids_after["edt_manager"] == ids_before["edt_manager"]
    assert ids_after["edt_worker"] != ids_before["edt_worker"]
    assert worker.start_at == datetime(2026, 12, 27, 9, 0, tzinfo=UTC)
    # An empty shifts.csv (header only) removes them all.
    result = import_folder(
        session_factory, [write_rota(tmp_path / "v3", shifts="person_id,role,start,end\n")]
    )
    assert result.counts == {"shifts": {"added": 0, "removed": 3, "unchanged": 0}}


def test_slack_user_found_is_kept_unless_the_email_changes(tmp_path: Path, session_factory) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    with session_factory.begin() as session:
        session.execute(
            update(Person)
            .where(Person.person_id == "hv-jsmith")
            .values(slack_user_found="U0FOUND01")
        )
    renamed = PEOPLE.replace("Jo Smith", "Joanne Smith")
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", people=renamed)])
    assert result.counts["people"]["updated"] == 1
    with session_factory() as session:
        person = session.get(Person, "hv-jsmith")
        assert (person.name, person.slack_user_found) == ("Joanne Smith", "U0FOUND01")
    # The Slack ID found for the old address must not be used for a new one.
    moved = renamed.replace("jo.smith@", "joanne.smith@")
    import_folder(session_factory, [write_rota(tmp_path / "v3", people=moved)])
    with session_factory() as session:
        assert session.get(Person, "hv-jsmith").slack_user_found is None


def test_a_dry_run_is_the_import_rolled_back(tmp_path: Path, session_factory) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    before = snapshot(session_factory)
    shifts = SHIFTS + "hv-jsmith,duty:hv-north,2026-12-30T09:00,2026-12-30T17:00\n"
    batch = read_rota_files([write_rota(tmp_path / "v2", shifts=shifts)], LONDON)
    with session_factory() as session:
        result = apply_rota(session, batch, NOW)
        session.rollback()
    assert result.changed and result.version == 2
    assert replace(result, dry_run=True).lines() == [
        "shifts: 1 added, 0 removed, 3 unchanged",
        "dry run: nothing written; would become rota version 2",
    ]
    assert snapshot(session_factory) == before


def test_a_team_moving_workspace_forgets_the_slack_ids_found_by_email(
    tmp_path: Path, session_factory
) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    with session_factory.begin() as session:
        session.execute(update(Person).values(slack_user_found="U0FOUND"))
    teams = with_workspace({"hv-north": "T0NHSTRUST"})
    import_folder(session_factory, [write_rota(tmp_path / "v2", **{**BASE, "teams": teams})])
    with session_factory() as session:
        found = dict(session.execute(select(Person.person_id, Person.slack_user_found)).all())
        teams_of = dict(session.execute(select(Person.person_id, Person.team_id)).all())
    assert {p for p, value in found.items() if value} == {
        p for p, team in teams_of.items() if team != "hv-north"
    }
    assert {p for p, value in found.items() if not value} == {
        p for p, team in teams_of.items() if team == "hv-north"
    }
