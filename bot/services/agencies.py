"""Agency types and working time of a referral's targets and recipients, read from the rota.

The agency type of `person:ID` and `team:ID` targets is their team's; a `role:NAME` target takes
the agency type of the team of the person it was sent (or is planned) to.
"""

from __future__ import annotations

from collections.abc import Iterable
from zoneinfo import ZoneInfo

from rota.models import Person, Team
from rota.store import RotaStore
from rota.worktime import WorkingTime, WorkingTimes


class AgencyResolver:
    """Agency types and working time of targets and recipients, cached for one session."""

    def __init__(self, store: RotaStore, tz: ZoneInfo) -> None:
        self.store = store
        self.tz = tz
        self._working_times = WorkingTimes(store, tz)

    def preload(self, targets: Iterable[str], recipients: Iterable[str | None]) -> None:
        """Read the people and teams these targets and recipients name, in a few queries."""
        person_ids = {r for r in recipients if r}
        team_ids: set[str] = set()
        for text in targets:
            kind, _, ref = text.partition(":")
            if kind == "person":
                person_ids.add(ref)
            elif kind == "team":
                team_ids.add(ref)
        people = self.store.people_by_ids(person_ids)
        self.store.teams_by_ids(team_ids | {p.team_id for p in people.values()})

    def _team_of_person(self, person_id: str | None) -> Team | None:
        person: Person | None = self.store.person(person_id) if person_id else None
        return self.store.team(person.team_id) if person is not None else None

    def team_for(self, target: str, recipient: str | None) -> Team | None:
        """The team a target belongs to (a role's is the team of whoever it went to)."""
        kind, _, ref = target.partition(":")
        if kind == "person":
            return self._team_of_person(ref)
        if kind == "team":
            return self.store.team(ref)
        return self._team_of_person(recipient)

    def agency_type(self, target: str, recipient: str | None) -> str | None:
        """The agency type of a target, or None when its team is unknown."""
        team = self.team_for(target, recipient)
        return team.agency_type if team is not None else None

    def working_time(self, target: str, recipient: str | None) -> WorkingTime:
        """The working time a prompt to `recipient` for `target` is measured in."""
        return self._working_times.of_prompt(recipient, target)
