"""What every mail-server session has: it is closed when the ``with`` block ends."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Session:
    def close(self) -> None:
        """End the session (subclasses say how)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
