"""An invocation's time: how long a function may still work before Lambda ends it.

Lambda kills an invocation at its Timeout, whatever it is doing: work half done is lost and
the batch comes back only after the queue's visibility timeout. So every function works out
its budget from the context's remaining time, keeps a margin to wrap up (record what is done,
hand the rest back), and never starts what cannot finish inside what remains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# The wrap-up margin: a tenth of the invocation's time, within these bounds (seconds).
MIN_MARGIN = 0.2
MAX_MARGIN = 5.0


class RemainingTime(Protocol):
    """The part of Lambda's context object that tells the time left."""

    def get_remaining_time_in_millis(self) -> int: ...


class OutOfTime(Exception):
    """Raised by work that stopped because its invocation's budget ran out; the caller hands
    the rest over to a later invocation."""


@dataclass(frozen=True)
class Budget:
    """`deadline` is the `clock()` reading by which the work must have ended (the margin
    already taken off)."""

    deadline: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(float("inf"))

    @classmethod
    def seconds(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Budget:
        """`seconds` from now, the wrap-up margin taken off."""
        return cls(clock() + seconds - margin_for(seconds), clock)

    @classmethod
    def from_context(
        cls, context: RemainingTime | None, clock: Callable[[], float] = time.monotonic
    ) -> Budget:
        """The budget of the invocation whose context this is; unlimited without one (a
        direct call, a test)."""
        getter = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(getter):
            return cls.unlimited()
        return cls.seconds(max(0, int(getter())) / 1000, clock)

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def fits(self, seconds: float) -> bool:
        """Whether work of `seconds` started now ends inside the budget."""
        return self.remaining() >= seconds

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self) -> None:
        """Raise OutOfTime once the budget is spent."""
        if self.expired:
            raise OutOfTime(f"the invocation's budget ran out {-self.remaining():.2f}s ago")


def margin_for(seconds: float) -> float:
    """What to keep back of an invocation of `seconds` to record and hand back its work."""
    return min(MAX_MARGIN, max(MIN_MARGIN, seconds / 10))
