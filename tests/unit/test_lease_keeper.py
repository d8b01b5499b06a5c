"""The fetcher's lease keeper renews the lease while a poll runs, and gives up once it is lost."""

from __future__ import annotations

import time
import uuid

from mailintake_fetcher.lease_keeper import LeaseKeeper


class Leases:
    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[uuid.UUID, int, float]] = []

    def renew_lease(self, connection_id: uuid.UUID, token: int, seconds: float) -> bool:
        self.calls.append((connection_id, token, seconds))
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def _wait_for_calls(leases: Leases, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(leases.calls) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_renews_through_database_errors_until_the_lease_is_lost() -> None:
    connection_id = uuid.uuid4()
    leases = Leases(True, OSError("database out of reach"), True, False)
    with LeaseKeeper(leases, connection_id, 7, seconds=0.06) as keeper:
        _wait_for_calls(leases, 4)
        time.sleep(0.2)  # ten more periods: no renewal after the lease was lost
    assert leases.calls == [(connection_id, 7, 0.06)] * 4
    assert keeper.lost


def test_stops_renewing_when_the_poll_ends() -> None:
    leases = Leases()
    with LeaseKeeper(leases, uuid.uuid4(), 1, seconds=0.06) as keeper:
        _wait_for_calls(leases, 2)
    assert not keeper.lost
    count = len(leases.calls)
    time.sleep(0.1)
    assert count >= 2
    assert len(leases.calls) == count
