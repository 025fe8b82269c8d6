"""Backpressure: requests to one base are decoded one at a time (the pool's lock), and at
most `serve.queue` more wait for it; a request beyond that is refused at once (429 with
Retry-After) rather than held for an unbounded time."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from appliance.errors import ForgeError


class QueueFull(ForgeError):
    """A base already has as many requests waiting as `serve.queue` allows."""

    def __init__(self, base: str, waiting: int, retry_after_s: int) -> None:
        super().__init__(
            f"{waiting} requests are waiting for {base} (serve.queue); try again later",
            f"retry after {retry_after_s} s",
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Ticket:
    base: str


class Admission:
    """Who is inside, per base: the one decoding and those waiting behind it."""

    def __init__(self, queue: int) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self._inside: dict[str, int] = {}
        self._seconds: dict[str, float] = {}  # a recent request's duration, per base

    def enter(self, base: str) -> Ticket:
        with self._lock:
            inside = self._inside.get(base, 0)
            if inside > self.queue:
                # the one decoding, then each waiting one, at about a recent request's time
                retry = max(1, math.ceil(self._seconds.get(base, 1.0) * inside))
                raise QueueFull(base, inside - 1, retry)
            self._inside[base] = inside + 1
        return Ticket(base)

    def leave(self, ticket: Ticket, seconds: float | None = None) -> None:
        with self._lock:
            self._inside[ticket.base] -= 1
            if seconds is not None:
                self._seconds[ticket.base] = seconds

    def waiting(self) -> int:
        """Requests waiting behind the one each base is decoding."""
        with self._lock:
            return sum(max(0, n - 1) for n in self._inside.values())

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._inside.values())
