"""A Slack identity is (workspace, user): a user ID of one workspace never matches a person of
another (docs/partner-workspaces.md)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.services.directory import person_for_slack_user, workspace_of_person
from bot.services.home import manager_slack_users
from rota.models import Person, Team

POLICE = "T0POLICE"


def team(team_id: str, workspace: str | None) -> Team:
    return Team(
        team_id=team_id,
        name=team_id,
        agency=team_id,
        agency_type="police" if workspace else "health",
        region="england",
        workspace=workspace,
    )


def person(person_id: str, team_id: str, slack_user: str | None, **fields: str) -> Person:
    return Person(
        person_id=person_id,
        name=person_id,
        team_id=team_id,
        role="r",
        slack_user=slack_user,
        permissions=fields.get("permissions", ""),
        slack_user_found=fields.get("found"),
    )


def test_the_same_user_id_in_two_workspaces_is_two_people(session: Session) -> None:
    session.add_all([team("hv-north", None), team("police-dau", POLICE)])
    session.flush()
    session.add_all(
        [
            person("hv-jo", "hv-north", "U0SAME", permissions="manager"),
            person("pc-ahmed", "police-dau", None, found="U0SAME"),
            person("insp-clarke", "police-dau", "U0CLARKE", permissions="manager"),
        ]
    )
    session.commit()

    assert person_for_slack_user(session, "U0SAME").person_id == "hv-jo"
    assert person_for_slack_user(session, "U0SAME", POLICE).person_id == "pc-ahmed"
    assert person_for_slack_user(session, "U0SAME", "T0SCHOOL") is None
    # Someone of the police workspace is nobody in the council's, and the other way round.
    assert person_for_slack_user(session, "U0CLARKE") is None
    assert person_for_slack_user(session, "U0CLARKE", POLICE).person_id == "insp-clarke"
    assert workspace_of_person(session, "pc-ahmed") == POLICE
    assert workspace_of_person(session, "hv-jo") is None
    assert workspace_of_person(session, "nobody") is None
    # Managers' Homes are drawn in each one's own workspace.
    assert manager_slack_users(session) == [(None, "U0SAME"), (POLICE, "U0CLARKE")]
