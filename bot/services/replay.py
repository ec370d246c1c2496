"""Signed Slack requests already answered, so that a replay is refused (docs/security.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.models import SlackRequest

# Slack's signature check refuses a timestamp more than 5 minutes from now; a minute more
# covers clocks that disagree a little.
REPLAY_WINDOW = timedelta(minutes=6)


def remember_request(session: Session, signature: str, timestamp: int) -> bool:
    """Record a signed request; False when the same signature was recorded before (a replay)."""
    expires_at = datetime.fromtimestamp(timestamp, UTC) + REPLAY_WINDOW
    try:
        with session.begin_nested():
            session.add(SlackRequest(signature=signature, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def forget_expired_requests(session: Session, *, now: datetime) -> int:
    """Delete the signatures whose requests can no longer pass the signature check."""
    result = session.execute(delete(SlackRequest).where(SlackRequest.expires_at < now))
    return result.rowcount or 0
