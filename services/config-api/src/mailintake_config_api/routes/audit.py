"""``/audit``: the audit log of configuration changes (administrators only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from mailintake_config_api import audit
from mailintake_config_api.auth import Admin
from mailintake_config_api.deps import SessionDep
from mailintake_config_api.schemas import (
    SINCE,
    UNTIL,
    AuditLogEntry,
    ErrorBody,
    Offset,
    Page,
    PlainText,
    UtcTime,
)

router = APIRouter(
    tags=["audit"], responses={code: {"model": ErrorBody} for code in (401, 403, 422, 429)}
)


@router.get("/audit", response_model=Page[AuditLogEntry], summary="The audit log")
def audit_log(
    session: SessionDep,
    _role: Admin,
    since: Annotated[UtcTime | None, Query(description=SINCE)] = None,
    until: Annotated[UtcTime | None, Query(description=UNTIL)] = None,
    actor: Annotated[
        PlainText | None, Query(description="Only this actor (`role:fingerprint`).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[AuditLogEntry]:
    rows, total = audit.page(
        session, since=since, until=until, actor=actor, limit=limit, offset=offset
    )
    items = [AuditLogEntry.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)
