"""Request-scoped dependencies: one database session (one transaction) per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from mailintake_config_api.resources import Resources


def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def session(res: Annotated[Resources, Depends(resources)]) -> Iterator[Session]:
    with res.sessions() as db, db.begin():
        yield db
    res.relay.wake.set()  # publish what the request queued in the outbox


ResourcesDep = Annotated[Resources, Depends(resources)]
SessionDep = Annotated[Session, Depends(session)]
