"""What every quality filter is, and what it says when it drops something.

A filter looks at one measure of a song or of a segment (`level`) and either lets it
through or returns a `Drop` naming itself, the measure and the value it saw, which becomes
the row of the rejects table. Filters only read measures: they never touch audio, so
adding one costs nothing at decode time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

Level = Literal["segment", "song"]
Measures = Mapping[str, float | None]


@dataclass(frozen=True)
class Drop:
    """A filter's verdict against a song or segment."""

    rule: str  # The filter's name, e.g. "min_bandwidth".
    measure: str
    value: float | None
    reason: str  # For a person: what was measured against what threshold.


class QualityFilter(Protocol):
    """A filter over one level's measures."""

    name: str
    level: Level

    def check(self, measures: Measures) -> Drop | None:
        """The drop, or None to keep."""
        ...


@dataclass(frozen=True)
class Bound:
    """Drop when `measure` lies beyond `threshold`: below it (`lower`) or above it.

    An undefined measure (None: the loudness of silence, the correlation of a dead channel)
    passes a bound on it; other filters (silence, channel balance) catch those.
    """

    name: str
    level: Level
    measure: str
    threshold: float
    lower: bool
    unit: str = ""
    magnitude: bool = False  # Compare |value|: a balance either way, an offset either sign.

    def check(self, measures: Measures) -> Drop | None:
        """The drop, or None to keep."""
        value = measures.get(self.measure)
        if value is None:
            return None
        seen = abs(value) if self.magnitude else value
        beyond = seen < self.threshold if self.lower else seen > self.threshold
        if not beyond:
            return None
        side = "below the minimum" if self.lower else "above the maximum"
        shown = f"|{self.measure}|" if self.magnitude else self.measure
        limit = f"{_number(self.threshold)}{self.unit}"
        reason = f"{shown} {_number(seen)}{self.unit} is {side} {limit}"
        return Drop(self.name, self.measure, value, reason)


def _number(value: float) -> str:
    return f"{value:.4g}"
