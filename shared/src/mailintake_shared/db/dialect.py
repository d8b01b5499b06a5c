"""What differs between the two databases mailintake runs on (PostgreSQL, SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement


def insert_for(session: Session) -> Callable[..., postgresql.Insert | sqlite.Insert]:
    """The session's dialect's INSERT, which knows ON CONFLICT DO NOTHING / DO UPDATE."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def lower(session: Session, text: Any) -> ColumnElement[str]:
    """``text`` in lower case as Python's ``str.lower`` has it, so that a term lowered in
    Python finds it: SQLite's ``lower()`` folds ASCII only (``MÜLLER`` → ``mÜller``), so on
    SQLite it is the ``unicode_lower`` function every connection of ``make_engine`` has;
    PostgreSQL's ``lower()`` folds by the database's LC_CTYPE (a ``C`` ctype folds ASCII
    only too)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.unicode_lower(text)
    return func.lower(text)
