"""The outbox: atomic claims with leases, confirmation by the owner only, backoff, card rows."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery import outbox
from bot.delivery.kinds import RowState
from bot.models import OutboxMessage, Referral
from tests.bot.factories import new_referral, new_target

T = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)  # a Monday morning
LEASE = timedelta(minutes=10)


def add_referral(session: Session, referral_id: str = "HO-AAAAAA") -> Referral:
    referral = new_referral(
        referral_id,
        received_at=T - timedelta(days=2),
        external_ref=f"LCS-{referral_id}",
        category="neglect",
    )
    session.add(referral)
    session.flush()
    return referral


def add_prompt(session: Session, due_at: datetime, **fields) -> OutboxMessage:
    fields.setdefault("referral_id", "HO-AAAAAA")
    fields.setdefault("kind", "prompt")
    fields.setdefault("state", RowState.PENDING)
    prompt = OutboxMessage(due_at=due_at, attempts=0, **fields)
    session.add(prompt)
    session.flush()
    return prompt


def claim(factory: sessionmaker[Session], now: datetime, who: str, limit: int = 50) -> list[int]:
    with factory.begin() as session:
        return [
            p.id for p in outbox.claim_due(session, now, instance_id=who, limit=limit, lease=LEASE)
        ]


def test_only_due_rows_are_claimed_and_they_carry_the_lease(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        due = add_prompt(session, T).id
        add_prompt(session, T + timedelta(seconds=1))  # not yet
        backing_off = add_prompt(
            session, T - timedelta(hours=1), next_attempt_at=T + timedelta(1)
        ).id
        add_prompt(session, T - timedelta(hours=1), state=RowState.SENT)
        retry_ready = add_prompt(session, T - timedelta(hours=2), next_attempt_at=T).id

    assert claim(session_factory, T, "a") == [retry_ready, due]
    with session_factory() as session:
        row = session.get(OutboxMessage, due)
        assert row.state == RowState.CLAIMED and row.claimed_by == "a"
        assert row.claimed_until == T + LEASE
        assert outbox.first_claimed_at(row) == T
        assert not outbox.needs_check(row)
        assert session.get(OutboxMessage, backing_off).state == RowState.PENDING
    assert claim(session_factory, T, "b") == []  # a claim is not due while its lease runs


def test_expired_claim_is_claimed_again_with_needs_check(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        prompt_id = add_prompt(session, T).id
    assert claim(session_factory, T, "dead") == [prompt_id]
    assert claim(session_factory, T + LEASE, "b") == []  # the lease ends after, not at, T+LEASE
    assert claim(session_factory, T + LEASE + timedelta(seconds=1), "b") == [prompt_id]
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert row.claimed_by == "b"
        assert outbox.needs_check(row)
        assert outbox.first_claimed_at(row) == T  # the history search starts at the first claim


def test_only_the_owner_can_confirm(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        prompt_id = add_prompt(session, T).id
    claim(session_factory, T, "a")
    later = T + LEASE + timedelta(seconds=1)
    claim(session_factory, later, "b")
    with session_factory.begin() as session:
        assert (
            outbox.mark_sent(
                session, prompt_id, instance_id="a", now=later, channel="D1", ts="1.0", late=False
            )
            is None
        )
    with session_factory.begin() as session:
        row = outbox.mark_sent(
            session, prompt_id, instance_id="b", now=later, channel="D1", ts="1.0", late=True
        )
        assert row is not None
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert (row.state, row.message_channel, row.message_ts, row.late) == (
            RowState.SENT,
            "D1",
            "1.0",
            True,
        )
        assert row.sent_at == later and not outbox.needs_check(row)


def test_release_for_retry_backs_off_30s_doubling_to_15_min(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        prompt_id = add_prompt(session, T).id
    now = T
    delays = []
    for _ in range(8):
        assert claim(session_factory, now, "a") == [prompt_id]
        with session_factory.begin() as session:
            row = outbox.release_for_retry(
                session, prompt_id, instance_id="a", now=now, error="http_503"
            )
            delays.append(row.next_attempt_at - now)
            now = row.next_attempt_at
        assert claim(session_factory, now - timedelta(seconds=1), "a") == []
    assert [d.total_seconds() for d in delays] == [30, 60, 120, 240, 480, 900, 900, 900]
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert row.attempts == 8 and row.state == RowState.PENDING and row.last_error == "http_503"


def test_retry_after_beyond_the_backoff_is_honoured_and_doubt_is_kept(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        prompt_id = add_prompt(session, T).id
    claim(session_factory, T, "a")
    with session_factory.begin() as session:
        row = outbox.release_for_retry(
            session,
            prompt_id,
            instance_id="a",
            now=T,
            error="http_500",
            may_have_posted=True,
            not_before=T + timedelta(seconds=90),
        )
        assert row.next_attempt_at == T + timedelta(seconds=90)
    assert claim(session_factory, T + timedelta(seconds=90), "b") == [prompt_id]
    with session_factory() as session:
        assert outbox.needs_check(session.get(OutboxMessage, prompt_id))


def test_mark_failed_is_final(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        prompt_id = add_prompt(session, T).id
    claim(session_factory, T, "a")
    with session_factory.begin() as session:
        outbox.mark_failed(session, prompt_id, instance_id="a", now=T, error="user_not_found")
    assert claim(session_factory, T + timedelta(days=1), "a") == []
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert row.state == RowState.FAILED and row.last_error == "user_not_found"


def test_next_due_at_sees_backoff_and_leases(session_factory) -> None:
    with session_factory() as session:
        assert outbox.next_due_at(session) is None
    with session_factory.begin() as session:
        add_referral(session)
        add_prompt(session, T + timedelta(hours=3))
        add_prompt(session, T, next_attempt_at=T + timedelta(hours=2))
    with session_factory() as session:
        assert outbox.next_due_at(session) == T + timedelta(hours=2)
    with session_factory.begin() as session:
        add_prompt(session, T - timedelta(hours=1))
    claim(session_factory, T - timedelta(minutes=30), "a")
    with session_factory() as session:
        assert outbox.next_due_at(session) == T - timedelta(minutes=30) + LEASE


def test_concurrent_claims_never_overlap(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        for i in range(120):
            add_prompt(session, T - timedelta(seconds=i))
    results: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        # Three claimers in a tight loop: on SQLite one can wait out the busy timeout while the
        # others keep the write lock, which a dispatcher meets as a failed pass and retries.
        got: list[int] = []
        locked = 0
        try:
            while True:
                try:
                    batch = claim(session_factory, T, name, limit=7)
                except OperationalError as exc:
                    if "locked" not in str(exc) or locked == 20:
                        raise
                    locked += 1
                    continue
                if not batch:
                    break
                got.extend(batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        results[name] = got

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    claimed = [pid for got in results.values() for pid in got]
    assert len(claimed) == 120 and len(set(claimed)) == 120


def test_card_refresh_keeps_one_pending_row_per_referral(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        add_referral(session, "HO-BBBBBB")
        first = outbox.enqueue_card_refresh(session, "HO-AAAAAA", T).id
        again = outbox.enqueue_card_refresh(session, "HO-AAAAAA", T + timedelta(minutes=1)).id
        other = outbox.enqueue_card_refresh(session, "HO-BBBBBB", T).id
    assert first == again != other
    claim(session_factory, T, "a")  # the card is in flight: a change now needs a new row
    with session_factory.begin() as session:
        newer = outbox.enqueue_card_refresh(session, "HO-AAAAAA", T + timedelta(minutes=2)).id
        assert newer != first
        assert outbox.unfinished_card_before(session, "HO-AAAAAA", newer)
        count = session.scalar(
            select(func.count(OutboxMessage.id)).where(
                OutboxMessage.referral_id == "HO-AAAAAA", OutboxMessage.state == RowState.PENDING
            )
        )
        assert count == 1


def test_reschedule_keeps_the_original_due_time(session_factory) -> None:
    with session_factory.begin() as session:
        add_referral(session)
        prompt_id = add_prompt(session, T, detail=json.dumps({"planned_via": "self"})).id
    claim(session_factory, T, "a")
    with session_factory.begin() as session:
        outbox.reschedule(session, prompt_id, instance_id="a", due_at=T + timedelta(days=1))
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert row.state == RowState.PENDING and row.due_at == T + timedelta(days=1)
        detail = outbox.load_detail(row)
        assert detail["planned_via"] == "self"  # intake's keys survive
        assert detail["dispatch"]["original_due_at"] == T.isoformat()


def test_every_cancellation_cancels_claimed_rows_so_the_check_before_the_send_refuses_them(
    session_factory,
) -> None:
    """Close, answer, acknowledgement and an answered promise each cancel the rows a
    dispatcher holds in its batch as well as those pending (docs/timing.md, "Cancelled in a
    batch"); the holder's check refuses them, and it can tell them from a claim lost."""
    with session_factory.begin() as session:
        add_referral(session)
        target = new_target("HO-AAAAAA", "person:hv-jsmith", "hv-jsmith", T)
        session.add(target)
        session.flush()
        follow_up = {"alert_key": "k1", "alert_kind": "on_call"}
        kinds = {
            "repage": ("oncall_repage", follow_up),
            "contact": ("contact_check", {"followup_id": 7}),
            "reminder": ("escalation", {"step": "remind"}),
            "remind_dm": ("step_message", {"step": "remind"}),
            "breach_post": ("step_message", {"step": "breach"}),
            "prompt": ("prompt", {}),
        }
        ids = {
            name: add_prompt(
                session, T, kind=kind, target_id=target.id, detail=json.dumps(detail)
            ).id
            for name, (kind, detail) in kinds.items()
        }
    assert sorted(claim(session_factory, T, "a")) == sorted(ids.values())

    with session_factory.begin() as session:
        assert outbox.cancel_alert_follow_ups(session, "HO-AAAAAA", "k1") == 1
        assert outbox.cancel_loop_rows(session, 7, ["contact_check"]) == 1
        # An answer: the reminder step and its DM, not the breach's post nor the prompt.
        assert outbox.cancel_chasers(session, target.id) == 2
    with session_factory.begin() as session:
        cancelled = outbox.cancel_owed_by(session, "HO-AAAAAA")  # then the close: the prompt
    assert [row.id for row in cancelled] == [ids["prompt"]]

    reasons = {
        "repage": "acknowledged",
        "contact": "contact answered",
        "reminder": "answered",
        "remind_dm": "answered",
        "prompt": "referral closed",
    }
    for name, reason in reasons.items():
        with session_factory.begin() as session:
            assert not outbox.hold_claim(session, ids[name], instance_id="a", now=T, lease=LEASE)
            row = outbox.cancelled_under_claim(session, ids[name], "a")
            assert row is not None
            # Its holder's lease is kept: once it ends, unsettled, the row is looked for.
            assert (row.state, row.claimed_by, row.claimed_until, row.last_error) == (
                RowState.CANCELLED,
                "a",
                T + LEASE,
                reason,
            )
            assert outbox.cancelled_under_claim(session, ids[name], "b") is None
    with session_factory.begin() as session:
        # The breach's post is still ours to send.
        assert outbox.hold_claim(session, ids["breach_post"], instance_id="a", now=T, lease=LEASE)
        assert outbox.cancelled_under_claim(session, ids["breach_post"], "a") is None
