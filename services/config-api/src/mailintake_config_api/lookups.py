"""Lookups the routes share: a connection or 404, and a search term made safe for LIKE."""

from __future__ import annotations

import uuid

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Connection


def connection_or_404(session: Session, connection_id: uuid.UUID) -> Connection:
    row = session.get(Connection, connection_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no connection with this id")
    return row


def like_pattern(term: str) -> str:
    """``%term%``, case-folded, with LIKE's wildcards escaped (``escape="\\"``)."""
    escaped = term.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
