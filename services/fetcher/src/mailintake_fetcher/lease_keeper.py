"""Keeps a poll's lease alive while the poll runs: renewed every third of its length, so a
fetcher that crashes or is paused loses it within ``MAILINTAKE_POLL_LEASE_SECONDS``."""

from __future__ import annotations

import threading
import uuid
from types import TracebackType
from typing import Protocol

from mailintake_shared.logging import get_logger

log = get_logger(__name__)


class LeaseStore(Protocol):
    def renew_lease(self, connection_id: uuid.UUID, token: int, seconds: float) -> bool: ...


class LeaseKeeper:
    def __init__(
        self, store: LeaseStore, connection_id: uuid.UUID, token: int, seconds: float
    ) -> None:
        self._store = store
        self._connection_id = connection_id
        self._token = token
        self._seconds = seconds
        self._done = threading.Event()
        self.lost = False  # the lease ended or was taken over: the poll's work is wasted
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._seconds / 3):
            try:
                renewed = self._store.renew_lease(self._connection_id, self._token, self._seconds)
            except Exception as exc:  # the database is out of reach: try again next time
                log.warning(
                    "lease not renewed", connection_id=str(self._connection_id), error=str(exc)
                )
                continue
            if not renewed:  # the fence stops the poll before it changes anything
                log.warning("lease lost", connection_id=str(self._connection_id))
                self.lost = True
                return
