"""The only fake in the suite: a clock tests can move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        # Each reading moves a microsecond on, so events written in one request keep their order.
        self._now += timedelta(microseconds=1)
        return self._now

    def advance(self, **delta: float) -> None:
        self._now += timedelta(**delta)
