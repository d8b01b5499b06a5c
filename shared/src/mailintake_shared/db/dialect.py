"""What differs between the two databases mailintake runs on (PostgreSQL, SQLite)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session) -> Callable[..., postgresql.Insert | sqlite.Insert]:
    """The session's dialect's INSERT, which knows ON CONFLICT DO NOTHING / DO UPDATE."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert
