"""A partner agency in its own Slack, end to end: `serve` and two `dispatch` processes on
PostgreSQL, the Slack stand-in with the council's workspace and a police force's.

The police force's admin installs the app through /slack/install (Bolt's OAuth flow against
the stand-in's install page); a referral naming a health visitor (council workspace) and a
police constable (police workspace) reaches each in their own workspace, once; both answer;
another officer clicking a prompt that is not theirs is refused; the police admin removing the
app deletes its installation, and its officers are unreachable from then on.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet

from tests.e2e.harness import (
    EDT_CHANNEL,
    SAMPLE_ROTA,
    SIGNING_SECRET,
    Deployment,
    free_port,
    fresh_database,
    slack_user_of,
    start_standin,
    wait_for,
)
from tests.e2e.test_multi_instance import sent_by_each_dispatcher

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
# PC Ahmed is on a night shift (Sunday 19:00 to Monday 07:00); Jo Smith works Mon-Wed 09-17.
SUNDAY_2200 = datetime(2026, 11, 1, 22, 0, tzinfo=LONDON)
SUNDAY_2230 = datetime(2026, 11, 1, 22, 30, tzinfo=LONDON)
MONDAY_0900 = datetime(2026, 11, 2, 9, 0, tzinfo=LONDON)
BURST = 12  # referrals at once, each naming the constable twice (as himself, and by his role)
POLICE = "T0POLICE"
CLIENT_ID = "4242.1717"
CLIENT_SECRET = "e2e-oauth-client-secret"
TOKEN_KEY = Fernet.generate_key().decode()
# The police force's own Slack: the constable has no Slack ID in the rota (found by email);
# the sergeant's is given; the admin installs the app.
POLICE_USERS = [
    {"id": "U0PCAHMED", "name": "yusuf", "email": "yusuf.ahmed@wexcombe.example"},
    {"id": "U0PCEVANS", "name": "carys", "email": "carys.evans@wexcombe.example"},
    {"id": "U0PCADMIN", "name": "it-admin", "email": "slack-admin@police.example"},
]
POLICE_IDS = {"pol-pc-ahmed": "", "pol-sgt-evans": "U0PCEVANS"}
# While his force's Slack is out of reach, the constable's referrals pass to his deputy: here the
# EDT worker on shift on Sunday night, in the council's workspace.
DEPUTIES = {"pol-pc-ahmed": "edt-ben"}


def partner_rota(directory: Path) -> tuple[Path, Path]:
    """The sample rota with police-dau in the police workspace (`workspace` = T0POLICE), and
    the council workspace's people alone (the stand-in's home users)."""
    full, home = directory / "rota", directory / "home-users"
    shutil.copytree(SAMPLE_ROTA, full)
    home.mkdir()
    with open(SAMPLE_ROTA / "teams.csv", encoding="utf-8", newline="") as handle:
        teams = list(csv.DictReader(handle))
    with open(full / "teams.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, [*teams[0].keys(), "workspace"])
        writer.writeheader()
        for team in teams:
            writer.writerow(
                {**team, "workspace": POLICE if team["team_id"] == "police-dau" else ""}
            )
    with open(SAMPLE_ROTA / "people.csv", encoding="utf-8", newline="") as handle:
        people = list(csv.DictReader(handle))
    police = {p["person_id"] for p in people if p["team_id"] == "police-dau"}
    for name, rows in (
        ("rota", people),
        ("home", [p for p in people if p["person_id"] not in police]),
    ):
        target = (full if name == "rota" else home) / "people.csv"
        with open(target, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, list(people[0].keys()))
            writer.writeheader()
            for person in rows:
                if person["person_id"] in police:
                    person = {**person, "slack_user": POLICE_IDS.get(person["person_id"], "")}
                if person["person_id"] in DEPUTIES:
                    person = {**person, "deputy": DEPUTIES[person["person_id"]]}
                writer.writerow(person)
    return full, home


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    full, home = partner_rota(tmp_path)
    with ExitStack() as stack:
        workdir = tmp_path / "postgresql"
        workdir.mkdir()
        url = stack.enter_context(fresh_database("postgresql", workdir))
        standin = start_standin(
            workdir, home, ("--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET)
        )
        stack.callback(standin.stop)
        port = free_port()
        deployment = Deployment(
            workdir=workdir,
            database_url=url,
            standin=standin,
            clock_file=workdir / "clock",
            port=port,
            extra_env={
                "SLACK_CLIENT_ID": CLIENT_ID,
                "SLACK_CLIENT_SECRET": CLIENT_SECRET,
                "HANDOVER_TOKEN_KEY": TOKEN_KEY,
                "HANDOVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
            },
        )
        stack.callback(deployment.close)
        stack.callback(deployment.stop_all)
        deployment.set_clock(SUNDAY_2200)
        deployment.run("db", "upgrade")
        deployment.run("rota", "import", str(full))
        standin.post(
            "workspaces",
            {"team_id": POLICE, "name": "Wexcombe Constabulary", "users": POLICE_USERS},
        )
        # Slack delivers events and clicks of every workspace to the app's one Request URL.
        standin.post(
            "app",
            {
                "request_url": f"{deployment.base_url}/slack/events",
                "signing_secret": SIGNING_SECRET,
            },
        )
        yield deployment


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def install_as_partner_admin(deployment: Deployment) -> tuple[int, str]:
    """A police Slack admin's browser: the install page, Slack's approval, the redirect back.
    Returns the status and text of the page the bot shows at the end."""
    browser = urllib.request.build_opener(_NoRedirect)
    # Bolt's state cookie is `Secure`: a browser sends it to http://127.0.0.1 (a secure
    # context), which http.cookiejar would not, so the cookie is kept here by hand.
    cookies: dict[str, str] = {}

    def get(url: str) -> tuple[int, str, str]:
        request = urllib.request.Request(url)
        if cookies and url.startswith(deployment.base_url):
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
        try:
            response = browser.open(request, timeout=30)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, value = header.split(";", 1)[0].partition("=")
                cookies[name.strip()] = value.strip()
            return response.status, response.headers.get("Location", ""), response.read().decode()

    status, _, page = get(f"{deployment.base_url}/slack/install")
    assert status == 200, (status, page)
    [authorize] = re.findall(r'href="([^"]+/oauth/v2/authorize[^"]*)"', page)
    authorize = authorize.replace("&amp;", "&")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == ["chat:write,commands,im:write,im:history,users:read,users:read.email"]
    assert query["redirect_uri"] == [f"{deployment.base_url}/slack/oauth_redirect"]
    status, back, _ = get(f"{authorize}&team={POLICE}&user=U0PCADMIN")
    assert status == 302 and back.startswith(f"{deployment.base_url}/slack/oauth_redirect?code=")
    status, _, page = get(back)
    return status, page


def post_referral(deployment: Deployment, ref: str, notify: list[str]) -> str:
    status, answer = deployment.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": ref,
            "category": "domestic_abuse",
            "urgency": "standard",
            "referrer": "edt-amy",
            "notify": notify,
            "summary": f"SUMMARY-{ref} never leaves the bot",
        },
    )
    assert status == 201, (status, answer)
    return answer["referral_id"]


def prompt_id_of(messages: list[dict], referral_id: str) -> list[int]:
    """The prompts of `referral_id` among `messages` (by their metadata)."""
    return [
        m["metadata"]["event_payload"]["prompt_id"]
        for m in messages
        if (m.get("metadata") or {}).get("event_type") == "handover_prompt"
        and m["metadata"]["event_payload"]["referral_id"] == referral_id
    ]


def events(deployment: Deployment, referral_id: str, name: str) -> list[dict]:
    return [e for e in deployment.log(referral_id) if e["event"] == name]


def test_a_police_workspace_installs_the_app_and_its_officer_is_prompted_there(
    deployment: Deployment,
) -> None:
    deployment.start_server("--no-dispatcher")
    deployment.start("dispatch")
    deployment.start("dispatch")

    # --- the police force's Slack admin installs the app --------------------------------------
    status, page = install_as_partner_admin(deployment)
    assert status == 200 and "Thank you!" in page, page
    [(team, stored)] = deployment.query("SELECT team_id, bot_token FROM slack_bots")
    assert team == POLICE and stored.startswith("fernet:") and "xoxb" not in stored
    listed = deployment.run("workspaces", "list").stdout
    assert listed.startswith(f"{POLICE}\tWexcombe Constabulary\tU0POLICEBOT\t")

    # --- one referral, two workspaces: the constable at once, the health visitor at nine --------
    referral = post_referral(
        deployment, "LCS-2026-PW-001", ["person:hv-jsmith", "person:pol-pc-ahmed"]
    )
    deployment.settle()
    [ahmed_sent] = events(deployment, referral, "prompt_sent")
    assert ahmed_sent["recipient"] == "pol-pc-ahmed"
    assert ahmed_sent["detail"]["workspace"] == POLICE
    [ahmed_prompt] = deployment.standin.get("messages", user="U0PCAHMED", team=POLICE)["messages"]
    assert ahmed_prompt["team"] == POLICE
    # The EDT card (the council's workspace) names him without a cross-workspace mention.
    card = wait_for(
        lambda: [
            m
            for m in deployment.standin.channel(EDT_CHANNEL)
            if "in their agency's Slack" in json.dumps(m)
        ]
    )
    assert "`pol-pc-ahmed` in their agency's Slack" in json.dumps(card[-1])
    assert "U0PCAHMED" not in json.dumps(deployment.standin.channel(EDT_CHANNEL))
    # His App Home, in his workspace, shows the open prompt.
    home = wait_for(lambda: deployment.standin.get("home", user="U0PCAHMED", team=POLICE)["view"])
    assert home["team_id"] == POLICE and referral in json.dumps(home)
    # The constable was found by email in the police workspace, through its own token.
    lookups = deployment.standin.calls("users.lookupByEmail")
    assert [(c["team_id"], c["args"]["email"]) for c in lookups] == [
        (POLICE, "yusuf.ahmed@wexcombe.example")
    ]
    assert deployment.query(
        "SELECT slack_user_found FROM people WHERE person_id = 'pol-pc-ahmed'"
    ) == [("U0PCAHMED",)]

    # --- a police officer clicking the constable's prompt is refused, and it is logged -------
    refused = deployment.standin.deliver(
        "click", user="U0PCEVANS", action_id="handover_ack", channel=ahmed_prompt["channel"]
    )
    assert refused["state"] == "acked"
    [refusal] = wait_for(lambda: events(deployment, referral, "response_refused"))
    assert refusal["actor"] == "pol-sgt-evans" and refusal["recipient"] == "pol-pc-ahmed"
    assert refusal["detail"]["slack_user"] == "U0PCEVANS"
    assert refusal["detail"]["workspace"] == POLICE
    # The refusal is committed before the private notice is posted: wait for the notice.
    told = wait_for(
        lambda: [
            c
            for c in deployment.standin.calls("chat.postEphemeral")
            if c["args"]["user"] == "U0PCEVANS"
        ]
    )
    assert [c["team_id"] for c in told] == [POLICE]

    # --- the constable answers in the police workspace ------------------------------------------
    deployment.standin.deliver("click", user="U0PCAHMED", action_id="handover_not_known")
    [answer] = wait_for(lambda: events(deployment, referral, "not_known"))
    assert answer["actor"] == "pol-pc-ahmed"
    # The message is updated after the answer is recorded (the click's job, bot/slackjobs/).
    updated = wait_for(
        lambda: [
            c["team_id"]
            for c in deployment.standin.calls("chat.update")
            if c["args"]["channel"] == ahmed_prompt["channel"]
        ]
    )
    assert set(updated) == {POLICE}

    # --- a burst in both workspaces, shared by the two dispatchers: every message once ---------
    burst = [
        post_referral(
            deployment, f"LCS-2026-PW-1{n:02d}", ["person:pol-pc-ahmed", "role:police_dau"]
        )
        for n in range(BURST)
    ]
    deployment.settle(timeout=90)  # a burst on a shared 2-core machine
    rows = {pid for pid, (ref, state, _) in deployment.prompt_ids().items() if ref in burst}
    assert len(rows) == 2 * BURST
    assert {deployment.prompt_ids()[pid][1:] for pid in rows} == {("sent", "pol-pc-ahmed")}
    dms = deployment.standin.prompt_messages()
    assert {pid: len(dms[pid]) for pid in rows} == dict.fromkeys(rows, 1)
    assert {m["team"] for pid in rows for m in dms[pid]} == {POLICE}
    # The on-call alerts and cards of the burst stayed at home, once each.
    at_home = deployment.standin.prompt_messages(alerts=True)
    assert at_home and all(len(m) == 1 for m in at_home.values())
    assert {m["team"] for messages in at_home.values() for m in messages} == {"T0STANDIN"}
    per_dispatcher = sent_by_each_dispatcher(deployment, 2 * BURST + 1)
    assert len(per_dispatcher) == 2 and sum(per_dispatcher) == 2 * BURST + 1, per_dispatcher
    police_posts = len(
        [c for c in deployment.standin.calls("chat.postMessage") if c["team_id"] == POLICE]
    )

    # --- the police admin removes the app: its installation is deleted -------------------------
    deployment.standin.post(f"workspaces/{POLICE}/uninstall", {})
    # tokens_revoked deletes the bot, app_uninstalled (just after) the installations too.
    wait_for(
        lambda: (
            deployment.query(
                "SELECT (SELECT count(*) FROM slack_bots)"
                " + (SELECT count(*) FROM slack_installations)"
            )
            == [(0,)]
        )
    )

    deployment.set_clock(SUNDAY_2230)
    later = post_referral(deployment, "LCS-2026-PW-002", ["person:pol-pc-ahmed"])
    deployment.settle(timeout=60)
    posts = [c for c in deployment.standin.calls("chat.postMessage") if c["team_id"] == POLICE]
    assert len(posts) == police_posts  # nothing went there after the removal
    log = deployment.log(later)
    # He is unreachable (and has no email reach here): passed over at once to his deputy, in the
    # council's workspace, with the unreachable alert to the EDT manager on call.
    [unreachable] = [e for e in log if e["event"] == "unreachable"]
    assert unreachable["recipient"] == "pol-pc-ahmed"
    assert unreachable["target"] == "person:pol-pc-ahmed"
    # Not installed; or, within the seconds a dispatcher keeps a token, refused by Slack.
    assert unreachable["detail"]["reason"] in ("workspace_not_installed", "workspace_token_revoked")
    assert unreachable["detail"]["channels"] == [f"slack:{POLICE}"]
    assert unreachable["detail"]["alerted"] == ["edt-mgr-raj"]
    assert unreachable["detail"]["instead"] == "edt-ben"
    [rerouted] = [e for e in log if e["event"] == "prompt_rerouted"]
    assert (rerouted["recipient"], rerouted["detail"]["via"]) == ("edt-ben", "deputy")
    assert rerouted["detail"]["from"] == "pol-pc-ahmed"
    [moved] = [e for e in log if e["event"] == "prompt_sent"]
    assert moved["recipient"] == "edt-ben" and "workspace" not in moved["detail"]
    assert prompt_id_of(deployment.standin.dm(slack_user_of("edt-ben")), later)
    raj_alerts = json.dumps(deployment.standin.dm(slack_user_of("edt-mgr-raj")))
    assert "pol-pc-ahmed" in raj_alerts and later in raj_alerts

    # --- Monday nine: the health visitor, in the council's workspace, answers too --------------
    # The burst's escalation falls due too: over a hundred rows, many of them failing for the
    # removed workspace (more than 30 s of work at a load of 10 on a shared 2-core machine).
    deployment.advance(MONDAY_0900, timeout=90)
    sent = {e["recipient"]: e for e in events(deployment, referral, "prompt_sent")}
    assert set(sent) == {"hv-jsmith", "pol-pc-ahmed"}
    assert "workspace" not in sent["hv-jsmith"]["detail"]
    [jo_prompt] = deployment.standin.dm("U0HVJSMI01")
    assert jo_prompt["team"] == "T0STANDIN"
    deployment.standin.deliver("click", user="U0HVJSMI01", action_id="handover_ack")
    [ack] = wait_for(lambda: events(deployment, referral, "acknowledged"))
    assert ack["actor"] == "hv-jsmith"
    # Each prompt once, though two dispatchers share the work; no summary reached either Slack.
    prompts = deployment.standin.prompt_messages()
    # The first referral's two, the burst's, and the one the removed workspace passed on.
    assert len(prompts) == 3 + 2 * BURST and all(len(m) == 1 for m in prompts.values())
    assert "SUMMARY-" not in deployment.standin.all_text()
