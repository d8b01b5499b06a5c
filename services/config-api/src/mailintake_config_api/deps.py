"""Request-scoped dependencies: one database session (one transaction) per request.

The transaction commits when the route returns, before the answer is sent (the dependency's
``scope="function"``): a 2xx means the change is durable, and a commit the database refuses
is answered 503 (``CommitFailedError``) with nothing stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mailintake_config_api.errors import CommitFailedError
from mailintake_config_api.resources import Resources
from mailintake_shared.logging import get_logger

log = get_logger(__name__)


def resources(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


def session(res: Annotated[Resources, Depends(resources)]) -> Iterator[Session]:
    with res.sessions() as db:
        transaction = db.begin()
        try:
            yield db
        except BaseException:
            transaction.rollback()
            raise
        try:
            transaction.commit()
        except SQLAlchemyError as exc:
            log.error("commit refused by the database", error=str(exc).splitlines()[0])
            raise CommitFailedError() from exc
    res.relay.wake.set()  # publish what the request queued in the outbox


ResourcesDep = Annotated[Resources, Depends(resources)]
SessionDep = Annotated[Session, Depends(session, scope="function")]
