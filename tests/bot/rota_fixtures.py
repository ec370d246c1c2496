"""A small rota built directly with the models, for intake and API tests.

Times are Europe/London; in November that is UTC+00:00, in June UTC+01:00.

- edt (social care, shift-only): edt-amy (referrer), edt-mgr (referrer; manager; on call as
  edt_manager Fri 13 Nov 17:00 - Mon 16 Nov 09:00), edt-bob (no permissions),
  edt-old (referrer, deactivated).
- hv-north (health, Mon-Fri 09:00-17:00): hv-jsmith (deputy hv-cover), hv-cover, hv-lead (manager).
- gp-northgate (health, Mon-Fri 08:00-18:30, channel C0GPNORTH, closed Mon 16 Nov):
  gp-mgr (manager), gp-duty1 (on duty:gp-northgate Tue 17 Nov 08:00-18:30).
- police-dau (police, shift-only): pc-jones (police_dau Fri 13 Nov 17:00 - Mon 16 Nov 08:00).
- paediatrics (health): paed-1, whose only paediatrician shift was in January, so the role is
  known but nobody holds it within 7 days of any referral in these tests.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy.orm import Session, sessionmaker

from rota.models import Closure, RotaVersion, Shift
from tests.rota.factories import new_person, new_team

ROTA_VERSION = 3


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def build_rota(session_factory: sessionmaker[Session]) -> None:
    """Write the rota above and its version in one committed transaction."""
    with session_factory.begin() as session:
        session.add(
            RotaVersion(
                version=ROTA_VERSION,
                imported_at=_utc(2026, 11, 1, 12),
                files="teams.csv,people.csv,shifts.csv,closures.csv",
                summary="{}",
            )
        )
        session.add_all(
            [
                new_team(
                    "edt",
                    name="Emergency Duty Team",
                    agency="Northshire County Council",
                    agency_type="social_care",
                    hours="none",
                    manager_id="edt-mgr",
                    channel="C0EDT",
                ),
                new_team(
                    "hv-north",
                    name="Health Visiting North",
                    agency="Northshire Community Health",
                    manager_id="hv-lead",
                ),
                new_team(
                    "gp-northgate",
                    name="Northgate Surgery",
                    agency="Northgate Surgery",
                    hours="Mon-Fri 08:00-18:30",
                    manager_id="gp-mgr",
                    channel="C0GPNORTH",
                ),
                new_team(
                    "police-dau",
                    name="Domestic Abuse Unit",
                    agency="Northshire Police",
                    agency_type="police",
                    hours="none",
                ),
                new_team("paediatrics", name="Paediatrics", agency="Northshire Hospitals"),
            ]
        )
        session.flush()
        session.add_all(
            [
                new_person("edt-amy", "edt", role="social worker", permissions="referrer"),
                new_person("edt-mgr", "edt", role="edt manager", permissions="referrer;manager"),
                new_person("edt-bob", "edt", role="social worker", permissions=""),
                new_person(
                    "edt-old", "edt", role="social worker", permissions="referrer", active=False
                ),
                new_person("hv-jsmith", "hv-north", role="health visitor", deputy_id="hv-cover"),
                new_person("hv-cover", "hv-north", role="health visitor"),
                new_person("hv-lead", "hv-north", role="team lead", permissions="manager"),
                new_person(
                    "gp-mgr", "gp-northgate", role="practice manager", permissions="manager"
                ),
                new_person("gp-duty1", "gp-northgate", role="gp"),
                new_person("pc-jones", "police-dau", role="detective constable"),
                new_person("paed-1", "paediatrics", role="consultant"),
            ]
        )
        session.flush()
        session.add_all(
            [
                *(
                    Shift(person_id=person_id, role=role, start_at=start, end_at=end)
                    for person_id, role, start, end in (
                        ("edt-mgr", "edt_manager", _utc(2026, 11, 13, 17), _utc(2026, 11, 16, 9)),
                        ("pc-jones", "police_dau", _utc(2026, 11, 13, 17), _utc(2026, 11, 16, 8)),
                        (
                            "gp-duty1",
                            "duty:gp-northgate",
                            _utc(2026, 11, 17, 8),
                            _utc(2026, 11, 17, 18, 30),
                        ),
                        ("paed-1", "paediatrician", _utc(2026, 1, 5, 9), _utc(2026, 1, 5, 17)),
                    )
                ),
                Closure(
                    date=date(2026, 11, 16),
                    applies_to="gp-northgate",
                    from_time=None,
                    to_time=None,
                    reason="training day",
                ),
            ]
        )
