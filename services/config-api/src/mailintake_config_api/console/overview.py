"""The dashboard's figures: messages stored per hour, the connections in trouble and the
Incoming Mail Queue's size by state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Connection, ConnectionStatus, Message, OAuthGrant
from mailintake_shared.db.types import utcnow

HOURS = 24


@dataclass(frozen=True)
class Hour:
    start: datetime
    stored: int


def stored_per_hour(session: Session, now: datetime | None = None) -> list[Hour]:
    """Messages stored in each of the last 24 hours (the current one last), in UTC."""
    now = (now or utcnow()).replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(hours=HOURS - 1)
    if session.get_bind().dialect.name == "postgresql":
        in_utc = func.timezone("UTC", Message.stored_at)
        bucket = func.to_char(func.date_trunc("hour", in_utc), "YYYY-MM-DD HH24")
    else:
        bucket = func.strftime("%Y-%m-%d %H", Message.stored_at)
    counts: dict[str, int] = dict(
        session.execute(
            select(bucket, func.count()).where(Message.stored_at >= first).group_by(bucket)
        ).all()
    )
    hours = [first + timedelta(hours=i) for i in range(HOURS)]
    return [Hour(h, int(counts.get(h.strftime("%Y-%m-%d %H"), 0))) for h in hours]


def in_trouble(session: Session, stalled_after_s: float, limit: int = 20) -> list[Connection]:
    """Enabled connections whose last poll failed, that have not succeeded for the stalled
    time, or whose OAuth2 grant needs a new authorization."""
    cutoff = utcnow() - timedelta(seconds=stalled_after_s)
    last_success = func.coalesce(ConnectionStatus.last_success_at, Connection.updated_at)
    rows = session.scalars(
        select(Connection)
        .outerjoin(ConnectionStatus, ConnectionStatus.connection_id == Connection.id)
        .outerjoin(OAuthGrant, OAuthGrant.connection_id == Connection.id)
        .where(
            Connection.enabled,
            or_(
                ConnectionStatus.consecutive_failures > 0,
                last_success < cutoff,
                OAuthGrant.status == "authorization_required",
            ),
        )
        .order_by(func.lower(Connection.name))
        .limit(limit)
    )
    return list(rows)
