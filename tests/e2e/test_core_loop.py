"""The core loop end to end: `handover serve` as a process, the Slack stand-in as its peer.

A referral is taken at the weekend (through the case-system API and through the Slack modal),
the on-call people hear at once, and each daytime professional is prompted at the first instant
they are at work: never on the bank holiday, exactly at 09:00 on the next working morning, at
the right offset after a clock change, once and only once across crashes and restarts.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from handlers import ids
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import (
    EDT_CHANNEL,
    Deployment,
    modal_state,
    slack_signature,
    slack_user_of,
    wait_for,
)
from tests.handlers.slack_payloads import view_submission

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
# Saturday 26 December 2026, 02:10 GMT: Boxing Day; Monday 28th is its substitute bank holiday.
SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=LONDON)
BANK_HOLIDAY_NOON = datetime(2026, 12, 28, 12, 0, tzinfo=LONDON)
TUESDAY_0800 = datetime(2026, 12, 29, 8, 0, tzinfo=LONDON)
TUESDAY_0900 = datetime(2026, 12, 29, 9, 0, tzinfo=LONDON)

EDT_AMY = slack_user_of("edt-amy")
EDT_MGR_RAJ = slack_user_of("edt-mgr-raj")  # edt_manager on shift 24 Dec 12:00 - 29 Dec 09:00
POLICE_AHMED = slack_user_of("pol-pc-ahmed")  # police_dau on shift 25 Dec 19:00 - 26 Dec 07:00
HV_KPATEL = slack_user_of("hv-kpatel")  # hv-jsmith's deputy (hv-jsmith is on leave)
GP_JONES = slack_user_of("gp-drjones")  # duty:gp-northgate on Tue 29 Dec; found by email
BUTTONS = [ids.ACK, ids.HAS_INFO, ids.NOT_KNOWN, ids.REDIRECT]


def api_referral(
    external_ref: str, notify: list[str], summary: str, **fields: Any
) -> dict[str, Any]:
    """The body of a case-system referral by edt-amy."""
    return {
        "external_ref": external_ref,
        "category": "domestic_abuse",
        "urgency": "standard",
        "referrer": "edt-amy",
        "notify": notify,
        "summary": summary,
        **fields,
    }


def post_referral(deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = deployment.api("POST", "/api/referrals", body)
    assert status == 201, (status, answer)
    return answer


def action_ids(message: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in message.get("blocks", [])
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


def events(deployment: Deployment, referral_id: str, event: str) -> list[dict[str, Any]]:
    return [e for e in deployment.log(referral_id) if e["event"] == event]


def prompt_dms(deployment: Deployment, user: str) -> list[dict[str, Any]]:
    """The prompts (not alerts, not escalation steps) in `user`'s DM with the bot."""
    return [
        message
        for message in deployment.standin.dm(user)
        if (message.get("metadata") or {}).get("event_type") == "handover_prompt"
    ]


def assert_prompt(message: dict[str, Any], referral_id: str, *secrets: str) -> int:
    """A prompt DM as docs/reference/slack.md has it; returns its prompt_id."""
    metadata = message["metadata"]
    prompt_id = metadata["event_payload"]["prompt_id"]
    assert metadata == {
        "event_type": "handover_prompt",
        "event_payload": {"referral_id": referral_id, "prompt_id": prompt_id},
    }
    assert action_ids(message) == BUTTONS
    # The lock-screen text names the referral and nothing else of it.
    assert referral_id in message["text"]
    for secret in secrets:
        assert secret.lower() not in message["text"].lower()
    return prompt_id


def submit_modal_referral(deployment: Deployment, user: str, state: dict[str, Any]) -> Any:
    """`/handover` from `user`, then the modal it opened submitted with `state`."""
    opened = len(deployment.standin.calls("views.open"))
    status, body, _ = deployment.slash_command(user)
    assert status == 200, body
    wait_for(lambda: len(deployment.standin.calls("views.open")) > opened, timeout=10)
    view = deployment.standin.calls("views.open")[-1]["response"]["view"]
    assert view["callback_id"] == ids.REFERRAL_MODAL
    block_ids = [b.get("block_id") for b in view["blocks"] if b["type"] == "input"]
    assert block_ids == [
        "external_ref",
        "category",
        "urgency",
        "notify_people",
        "notify_teams",
        "notify_roles",
    ]
    payload = view_submission(
        user,
        ids.REFERRAL_MODAL,
        private_metadata=view["private_metadata"],
        values=state,
        view_id=view["id"],
    )
    status, answer = deployment.slack_payload(payload)
    assert status == 200, answer
    return answer


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_weekend_referrals_reach_on_call_now_and_daytime_staff_on_tuesday_at_nine(
    new_deployment: DeploymentFactory, backend: str
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    deployment.start_server()
    api_summary = "Mother assaulted holding baby; SUMMARY-API-7731"
    modal_summary = "Neighbour reports shouting; SUMMARY-MODAL-4410"

    # Through the case-system API.
    answer = post_referral(
        deployment,
        api_referral(
            "LCS-2026-000123",
            ["person:hv-jsmith", "team:gp-northgate", "role:police_dau"],
            api_summary,
        ),
    )
    api_id = answer["referral_id"]
    assert answer["plan"] == [
        {
            "target": "person:hv-jsmith",
            "recipient": "hv-kpatel",
            "via": "deputy",
            "due_at": "2026-12-29T09:00:00+00:00",
            "immediate": False,
        },
        {
            "target": "team:gp-northgate",
            "recipient": "gp-drjones",
            "via": "duty",
            "due_at": "2026-12-29T08:00:00+00:00",
            "immediate": False,
        },
        {
            "target": "role:police_dau",
            "recipient": "pol-pc-ahmed",
            "via": "shift",
            "due_at": "2026-12-26T02:10:00+00:00",
            "immediate": True,
        },
    ]
    assert {(a["kind"], a["target"], a["recipient"]) for a in answer["alerts"]} == {
        ("on_call", "role:edt_manager", "edt-mgr-raj"),
        ("long_gap", "person:hv-jsmith", "edt-mgr-raj"),
        ("long_gap", "team:gp-northgate", "edt-mgr-raj"),
    }

    # Through the Slack modal.
    ack = submit_modal_referral(
        deployment,
        EDT_AMY,
        modal_state(
            external_ref="LCS-2026-000124",
            category="neglect",
            urgency="urgent",
            people=("hv-jsmith",),
            roles=("police_dau",),
            summary=modal_summary,
        ),
    )
    assert not ack  # a plain ack closes the modal
    rows = deployment.query(
        "SELECT referral_id, source, referrer_id, summary FROM referrals "
        "WHERE external_ref = 'LCS-2026-000124'"
    )
    # The modal has no free text: a summary smuggled into its state is ignored.
    assert len(rows) == 1 and rows[0][1:] == ("slack", "edt-amy", "")
    modal_id = rows[0][0]
    # The submitter is told privately who will be asked, and when.
    ephemeral = wait_for(lambda: deployment.standin.calls("chat.postEphemeral"))[-1]
    assert ephemeral["args"]["user"] == EDT_AMY and modal_id in ephemeral["args"]["text"]

    # At once: the on-call EDT manager and the police desk, and a card for each referral.
    deployment.settle()
    manager_alerts = [
        m["metadata"]["event_payload"]
        for m in deployment.standin.dm(EDT_MGR_RAJ)
        if m["metadata"]["event_type"] == "handover_alert"
        and m["metadata"]["event_payload"]["kind"] == "on_call"
    ]
    assert sorted(p["referral_id"] for p in manager_alerts) == sorted([api_id, modal_id])
    police = prompt_dms(deployment, POLICE_AHMED)
    assert sorted(m["metadata"]["event_payload"]["referral_id"] for m in police) == sorted(
        [api_id, modal_id]
    )
    for message in police:
        assert_prompt(message, message["metadata"]["event_payload"]["referral_id"])
    cards = [
        m
        for m in deployment.standin.channel(EDT_CHANNEL)
        if m["metadata"]["event_type"] == "handover_card"
    ]
    assert sorted(m["metadata"]["event_payload"]["referral_id"] for m in cards) == sorted(
        [api_id, modal_id]
    )
    for referral_id in (api_id, modal_id):
        (sent,) = events(deployment, referral_id, "prompt_sent")
        assert (sent["at"], sent["recipient"], sent["target"]) == (
            "2026-12-26T02:10:00+00:00",
            "pol-pc-ahmed",
            "role:police_dau",
        )
        (alerted,) = events(deployment, referral_id, "on_call_alerted")
        assert (alerted["at"], alerted["recipient"]) == ("2026-12-26T02:10:00+00:00", "edt-mgr-raj")

    # Nothing reaches a daytime professional over the weekend or on the bank holiday.
    deployment.advance(BANK_HOLIDAY_NOON)
    assert prompt_dms(deployment, HV_KPATEL) == []
    assert prompt_dms(deployment, GP_JONES) == []
    held = {
        (referral_id, recipient): state
        for referral_id, state, recipient in deployment.prompt_ids().values()
        if recipient != "pol-pc-ahmed"
    }
    assert set(held.values()) == {"pending"}

    # The GP practice opens at 08:00; the health visitor's deputy starts at 09:00, not before.
    deployment.advance(TUESDAY_0800)
    (gp,) = prompt_dms(deployment, GP_JONES)
    assert_prompt(gp, api_id, "LCS-2026-000123", "domestic")
    deployment.advance(datetime(2026, 12, 29, 8, 59, 59, tzinfo=LONDON))
    assert prompt_dms(deployment, HV_KPATEL) == []

    deployment.advance(TUESDAY_0900)
    hv = prompt_dms(deployment, HV_KPATEL)
    assert sorted(m["metadata"]["event_payload"]["referral_id"] for m in hv) == sorted(
        [api_id, modal_id]
    )
    for message in hv:
        referral_id = message["metadata"]["event_payload"]["referral_id"]
        prompt_id = assert_prompt(
            message, referral_id, "LCS-2026-000123", "LCS-2026-000124", "domestic", "neglect"
        )
        (sent,) = [
            e
            for e in events(deployment, referral_id, "prompt_sent")
            if e["recipient"] == "hv-kpatel"
        ]
        assert sent["at"] == "2026-12-29T09:00:00+00:00"
        assert sent["target"] == "person:hv-jsmith"
        assert sent["detail"]["prompt_id"] == prompt_id
        assert sent["detail"]["via"] == "deputy"
        assert sent["detail"]["due_at"] == sent["detail"]["sent_at"] == "2026-12-29T09:00:00+00:00"
        assert sent["detail"]["channel"] == message["channel"]
        assert sent["detail"]["ts"] == message["ts"]
    (gp_sent,) = [
        e for e in events(deployment, api_id, "prompt_sent") if e["recipient"] == "gp-drjones"
    ]
    assert gp_sent["at"] == "2026-12-29T08:00:00+00:00"

    # Every prompt went once; the summaries never left the database.
    assert all(len(messages) == 1 for messages in deployment.standin.prompt_messages().values())
    assert {state for _, state, _ in deployment.prompt_ids().values()} == {"sent"}
    sent_text = deployment.standin.all_text()
    assert "SUMMARY-API-7731" not in sent_text
    assert "SUMMARY-MODAL-4410" not in sent_text
    assert "SUMMARY-" not in json.dumps(deployment.standin.views())
    # The tests read the log in-process, through the command's own code; `handover log` as a
    # process prints the same records.
    whole = deployment.log()
    assert whole and deployment.log_process() == whole
    assert deployment.log_process(api_id) == deployment.log(api_id)


def test_prompts_keep_to_nine_oclock_local_across_both_clock_changes(
    new_deployment: DeploymentFactory,
) -> None:
    # Saturday 24 October 2026, 22:00 BST; the clocks go back at 02:00 on Sunday the 25th.
    autumn = datetime.fromisoformat("2026-10-24T22:00:00+01:00")
    deployment = new_deployment("sqlite", autumn)
    deployment.start_server()
    answer = post_referral(
        deployment, api_referral("LCS-2026-000500", ["person:hv-kpatel"], "SUMMARY-DST-1")
    )
    autumn_id = answer["referral_id"]
    assert [(e["recipient"], e["due_at"]) for e in answer["plan"]] == [
        ("hv-kpatel", "2026-10-26T09:00:00+00:00")
    ]
    deployment.settle()
    # 08:00 UTC is 09:00 by Saturday's offset: a bot that kept +01:00 would prompt now.
    deployment.advance(datetime.fromisoformat("2026-10-26T08:00:00+00:00"))
    assert prompt_dms(deployment, HV_KPATEL) == []
    deployment.advance(datetime.fromisoformat("2026-10-26T08:59:59+00:00"))
    assert prompt_dms(deployment, HV_KPATEL) == []
    deployment.advance(datetime.fromisoformat("2026-10-26T09:00:00+00:00"))
    (autumn_dm,) = prompt_dms(deployment, HV_KPATEL)
    assert_prompt(autumn_dm, autumn_id, "LCS-2026-000500", "domestic")
    (sent,) = events(deployment, autumn_id, "prompt_sent")
    assert sent["at"] == "2026-10-26T09:00:00+00:00"
    assert sent["detail"]["due_at"] == "2026-10-26T09:00:00+00:00"

    # Saturday 27 March 2027, 22:00 GMT; the clocks go forward at 01:00 on Sunday the 28th,
    # which is Easter Day: Easter Monday is a bank holiday, so 09:00 BST on Tuesday.
    deployment.advance(datetime.fromisoformat("2027-03-27T22:00:00+00:00"))
    answer = post_referral(
        deployment, api_referral("LCS-2027-000501", ["person:hv-kpatel"], "SUMMARY-DST-2")
    )
    spring_id = answer["referral_id"]
    assert [(e["recipient"], e["due_at"]) for e in answer["plan"]] == [
        ("hv-kpatel", "2027-03-30T09:00:00+01:00")
    ]
    deployment.settle()
    deployment.advance(datetime.fromisoformat("2027-03-29T09:00:00+00:00"))
    assert [m for m in prompt_dms(deployment, HV_KPATEL) if spring_id in m["text"]] == []
    deployment.advance(datetime.fromisoformat("2027-03-30T07:59:59+00:00"))
    assert [m for m in prompt_dms(deployment, HV_KPATEL) if spring_id in m["text"]] == []
    deployment.advance(datetime.fromisoformat("2027-03-30T08:00:00+00:00"))
    (spring_dm,) = [m for m in prompt_dms(deployment, HV_KPATEL) if spring_id in m["text"]]
    assert_prompt(spring_dm, spring_id, "LCS-2027-000501")
    (sent,) = events(deployment, spring_id, "prompt_sent")
    # The log writes local times with their offset: 09:00 BST is 08:00 UTC.
    assert sent["at"] == sent["detail"]["sent_at"] == "2027-03-30T09:00:00+01:00"
    assert sent["detail"]["due_at"] == "2027-03-30T09:00:00+01:00"
    assert "SUMMARY-DST" not in deployment.standin.all_text()


def test_forged_missing_and_stale_signatures_are_refused_with_nothing_written(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", SATURDAY)
    deployment.start_server()
    calls_before = len(deployment.standin.calls())
    command = (
        "token=unused&team_id=T0STANDIN&channel_id=C0EDTCARDS&user_id="
        f"{EDT_AMY}&command=%2Fhandover&text=&trigger_id=1.2.3"
        "&response_url=http%3A%2F%2F127.0.0.1%3A9%2Fr"
    ).encode()
    submission = json.dumps(
        view_submission(
            EDT_AMY,
            ids.REFERRAL_MODAL,
            private_metadata="{}",
            values=modal_state(
                external_ref="LCS-2026-000900",
                category="neglect",
                people=("hv-jsmith",),
                summary="SUMMARY-FORGED-1",
            ),
        )
    )
    form = ("payload=" + quote(submission)).encode()
    stale = int(time.time()) - 600
    for body in (command, form):
        assert deployment.slack_raw(body, secret="not-the-signing-secret")[0] == 401
        assert deployment.slack_raw(body, signed=False)[0] == 401
        assert deployment.slack_raw(body, timestamp=stale)[0] == 401
        # A signature over another body does not carry over.
        tampered = body.replace(EDT_AMY.encode(), EDT_MGR_RAJ.encode())
        assert tampered != body
        headers = slack_signature(body)
        assert deployment.slack_raw(tampered, signed=False, headers=headers)[0] == 401

    referral = json.dumps(
        api_referral("LCS-2026-000901", ["person:hv-jsmith"], "SUMMARY-FORGED-2")
    ).encode()
    simulated = int(deployment.now().timestamp())
    assert deployment.api_raw(referral, secret="not-the-api-secret")[0] == 401
    assert deployment.api_raw(referral, signed=False)[0] == 401
    assert deployment.api_raw(referral, timestamp=simulated - 301)[0] == 401
    assert deployment.api_raw(referral, timestamp=simulated + 301)[0] == 401

    deployment.wait_idle(settle=0.5)
    assert deployment.query("SELECT count(*) FROM referrals") == [(0,)]
    assert deployment.query("SELECT count(*) FROM outbox") == [(0,)]
    # The deployment's rota import is logged; the forged requests must add nothing.
    assert deployment.query("SELECT count(*) FROM audit_log WHERE event <> 'rota_imported'") == [
        (0,)
    ]
    assert deployment.standin.calls()[calls_before:] == []
    assert "SUMMARY-FORGED" not in deployment.standin.all_text()

    # The same requests, properly signed, are accepted: the refusals were the signatures'.
    assert deployment.api_raw(referral)[0] == 201
    assert deployment.slack_raw(command)[0] == 200
    wait_for(lambda: deployment.standin.calls("views.open"))


def sent_events(deployment: Deployment, referral_id: str) -> list[dict[str, Any]]:
    return [
        e for e in deployment.log(referral_id) if e["event"] in ("prompt_sent", "prompt_sent_late")
    ]


def assert_each_prompt_sent_once(deployment: Deployment) -> None:
    """One DM per prompt row, every row sent, one sent event per row."""
    rows = deployment.prompt_ids()
    assert {state for _, state, _ in rows.values()} == {"sent"}
    dms = deployment.standin.prompt_messages()
    assert set(dms) == set(rows)
    assert {prompt_id: len(messages) for prompt_id, messages in dms.items()} == dict.fromkeys(
        rows, 1
    )
    logged = [
        e["detail"]["prompt_id"]
        for referral_id in {r for r, _, _ in rows.values()}
        for e in sent_events(deployment, referral_id)
    ]
    assert sorted(logged) == sorted(rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_between_intake_and_the_prompt_day_loses_and_repeats_nothing(
    new_deployment: DeploymentFactory, backend: str
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    server = deployment.start_server()
    referral_id = post_referral(
        deployment,
        api_referral(
            "LCS-2026-000200",
            ["person:hv-jsmith", "team:gp-northgate", "role:police_dau"],
            "SUMMARY-KILL-1",
        ),
    )["referral_id"]
    deployment.settle()
    deployment.kill(server)  # SIGKILL on Saturday night
    deployment.set_clock(datetime(2026, 12, 27, 14, 0, tzinfo=LONDON))
    deployment.start_server()
    deployment.settle()
    deployment.advance(TUESDAY_0800)
    deployment.advance(TUESDAY_0900)

    assert_each_prompt_sent_once(deployment)
    sent = {e["recipient"]: e for e in sent_events(deployment, referral_id)}
    assert {r: (e["event"], e["at"]) for r, e in sent.items()} == {
        "pol-pc-ahmed": ("prompt_sent", "2026-12-26T02:10:00+00:00"),
        "gp-drjones": ("prompt_sent", "2026-12-29T08:00:00+00:00"),
        "hv-kpatel": ("prompt_sent", "2026-12-29T09:00:00+00:00"),
    }
    # The on-call alerts of Saturday were not repeated by the restarted bot either.
    alerts = deployment.standin.prompt_messages(alerts=True)
    assert all(len(messages) == 1 for messages in alerts.values())
    assert "SUMMARY-KILL" not in deployment.standin.all_text()


def kill_between_post_and_commit(
    deployment: Deployment, external_ref: str
) -> tuple[str, int, dict[str, Any]]:
    """A 09:00 prompt stored by Slack whose answer never reached the bot, which is SIGKILLed and
    restarted; the clock then passes the dead process's 30-second lease. Returns the referral,
    the prompt_id and the message Slack stored."""
    server = deployment.start_server()
    referral_id = post_referral(
        deployment, api_referral(external_ref, ["person:hv-jsmith"], "SUMMARY-KILL-2")
    )["referral_id"]
    deployment.settle()
    ((prompt_id, (_, state, _)),) = deployment.prompt_ids().items()
    assert state == "pending"
    # Nobody acknowledges Saturday's on-call alerts: re-paged, then posted, that night (so the
    # fault below meets the prompt, not them).
    deployment.advance(datetime(2026, 12, 26, 2, 31, tzinfo=LONDON))

    deployment.standin.inject(
        {"kind": "hang", "method": "chat.postMessage", "seconds": 60, "after_apply": True}
    )
    deployment.set_clock(TUESDAY_0900)
    (stored,) = wait_for(lambda: deployment.standin.prompt_messages().get(prompt_id))
    assert stored["channel"] == deployment.standin.get("dm", user=HV_KPATEL)["channel"]
    deployment.kill(server)
    assert deployment.query("SELECT state FROM outbox WHERE id = :id", id=prompt_id) == [
        ("claimed",)
    ]
    deployment.standin.clear_faults()

    # Restarted, the bot leaves the row alone while the dead process's lease runs...
    restarted = deployment.start_server()
    deployment.set_clock(datetime(2026, 12, 29, 9, 0, 20, tzinfo=LONDON))
    deployment.wait_idle(restarted, settle=1.0)
    assert deployment.query("SELECT state FROM outbox WHERE id = :id", id=prompt_id) == [
        ("claimed",)
    ]
    # ...then finds the message in the DM's history instead of posting it again.
    deployment.advance(datetime(2026, 12, 29, 9, 11, tzinfo=LONDON))
    return referral_id, prompt_id, stored


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_between_post_and_commit_the_prompt_is_found_not_posted_again(
    new_deployment: DeploymentFactory, backend: str
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    referral_id, prompt_id, stored = kill_between_post_and_commit(deployment, "LCS-2026-000201")
    assert deployment.standin.prompt_messages()[prompt_id] == [stored]
    assert len(prompt_dms(deployment, HV_KPATEL)) == 1
    (sent,) = sent_events(deployment, referral_id)
    assert sent["recipient"] == "hv-kpatel"
    assert sent["detail"]["prompt_id"] == prompt_id
    assert sent["detail"]["found_in_history"] is True
    assert (sent["detail"]["channel"], sent["detail"]["ts"]) == (stored["channel"], stored["ts"])
    assert deployment.query(
        "SELECT state, message_channel, message_ts FROM outbox WHERE id = :id", id=prompt_id
    ) == [("sent", stored["channel"], stored["ts"])]
    assert_each_prompt_sent_once(deployment)
    assert "SUMMARY-KILL" not in deployment.standin.all_text()


def test_a_prompt_found_in_history_is_logged_as_sent_when_it_was_posted(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("sqlite", SATURDAY)
    referral_id, prompt_id, _ = kill_between_post_and_commit(deployment, "LCS-2026-000203")
    (sent,) = sent_events(deployment, referral_id)
    assert sent["detail"]["found_in_history"] is True
    assert sent["detail"]["prompt_id"] == prompt_id
    # hv-kpatel had the prompt at 09:00; the log and the reminder clock should say so.
    assert sent["event"] == "prompt_sent"
    assert sent["at"] == "2026-12-29T09:00:00+00:00"
    assert sent["detail"]["sent_at"] == "2026-12-29T09:00:00+00:00"
    assert sent["detail"]["found_at"] == "2026-12-29T09:11:00+00:00"
    assert "delay_minutes" not in sent["detail"]
    assert deployment.query("SELECT late FROM outbox WHERE id = :id", id=prompt_id) == [(False,)]


def test_down_at_nine_back_at_half_past_eleven_the_prompt_goes_late_and_says_so(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment("postgresql", SATURDAY)
    server = deployment.start_server()
    referral_id = post_referral(
        deployment, api_referral("LCS-2026-000202", ["person:hv-jsmith"], "SUMMARY-KILL-3")
    )["referral_id"]
    deployment.settle()
    deployment.set_clock(datetime(2026, 12, 29, 8, 55, tzinfo=LONDON))
    deployment.wait_idle(server, settle=0.5)
    deployment.kill(server)
    deployment.set_clock(TUESDAY_0900)
    time.sleep(0.5)  # nobody is running at 09:00
    assert prompt_dms(deployment, HV_KPATEL) == []

    deployment.set_clock(datetime(2026, 12, 29, 11, 30, tzinfo=LONDON))
    deployment.start_server()
    deployment.settle()
    (dm,) = prompt_dms(deployment, HV_KPATEL)
    prompt_id = assert_prompt(dm, referral_id, "LCS-2026-000202")
    (late,) = sent_events(deployment, referral_id)
    assert late["event"] == "prompt_sent_late"
    assert late["at"] == "2026-12-29T11:30:00+00:00"
    assert late["detail"]["prompt_id"] == prompt_id
    assert late["detail"]["due_at"] == "2026-12-29T09:00:00+00:00"
    assert late["detail"]["sent_at"] == "2026-12-29T11:30:00+00:00"
    assert late["detail"]["delay_minutes"] == 150
    assert deployment.query("SELECT late FROM outbox WHERE id = :id", id=prompt_id) == [(True,)]
    assert_each_prompt_sent_once(deployment)
    assert "SUMMARY-KILL" not in deployment.standin.all_text()
