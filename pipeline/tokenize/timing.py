"""Where a tokenize run's time goes, per codec: its steady rate apart from its fixed costs.

The stage is a pipeline, so its wall time is not the sum of its steps. What it reports:

* the steady rate: segments per second over the second half of the run, timed by when the
  actors' encode calls returned. The first half is left out because the readers start
  before the actors and have a backlog ready when they do; draining it would flatter the
  rate. (Arrival times at the driver are no clock at all: Ray Data hands rows over in
  bursts.)
* the fixed costs: the wall time that rate does not explain, split into planning (claims,
  part markers, the dataset), start-up (Ray Data's planning, actor start, the codec's build
  (`model_load`), until the first encode returned) and finish (after the last encode: the
  last parts and the run artifacts);
* the cost of each step per segment: shard reading and FLAC decoding (reader CPU),
  staging the PCM in the actor, the encode call (transfer, model, codes back; it includes
  waiting while the actor's other call holds the device), part writing at the driver.

Times are `time.time()`: the actors' clocks and the driver's are compared.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.config import JsonConfig
from pipeline.tokenize.rows import TokenizedRow


@dataclass
class CodecClock:
    """Collects one codec's rows' costs, and when their encode calls returned."""

    read_s: float = 0.0
    staging_s: float = 0.0
    device_s: float = 0.0
    writing_s: float = 0.0
    load_s: float = 0.0
    encoded_at: list[float] = field(default_factory=list)

    def saw(self, row: TokenizedRow) -> None:
        """Count a row of this codec that reached the driver."""
        self.load_s = max(self.load_s, row.load_s)
        if row.usable:
            self.encoded_at.append(row.encoded_at)
            self.read_s += row.read_s
            self.staging_s += row.staging_s
            self.device_s += row.device_s

    def timed(self, work, *args):
        """`work(*args)`, its seconds counted as the driver's part writing."""
        started = time.perf_counter()
        try:
            return work(*args)
        finally:
            self.writing_s += time.perf_counter() - started


def steady_rate(encoded_at: list[float]) -> float:
    """Segments per second over the second half of the encode times (0 if too few)."""
    times = sorted(encoded_at)
    middle = len(times) // 2
    span = times[-1] - times[middle] if times else 0.0
    return (len(times) - 1 - middle) / span if span > 0 else 0.0


@dataclass
class StageTiming(JsonConfig):
    """One codec's share of a run's time, as `summary.json` records it (`timing`).

    Attributes:
        steady_segments_per_second: The steady rate (module docstring); 0 when too few
            batches ended at distinct moments to tell it (then all time counts as fixed).
        fixed_seconds: Wall time the steady rate does not explain.
        fixed: planning, start_up, model_load (part of start_up) and finish, in seconds.
        per_segment: Seconds per segment of read_decode, staging, device and part_writing.
    """

    steady_segments_per_second: float = 0.0
    fixed_seconds: float = 0.0
    fixed: dict[str, float] = field(default_factory=dict)
    per_segment: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, clock: CodecClock, started: float, flowing: float, ended: float) -> StageTiming:
        """The timing of a run that started at `started`, began iterating over rows at
        `flowing` and ended at `ended` (`time.time()`)."""
        segments = len(clock.encoded_at)
        if not segments:
            return cls(fixed_seconds=round(ended - started, 3))
        steady = steady_rate(clock.encoded_at)  # 0 when every batch ended at once.
        explained = segments / steady if steady else 0.0
        first, last = min(clock.encoded_at), max(clock.encoded_at)
        per = {
            "read_decode": clock.read_s,
            "staging": clock.staging_s,
            "device": clock.device_s,
            "part_writing": clock.writing_s,
        }
        return cls(
            steady_segments_per_second=round(steady, 3),
            fixed_seconds=round(max(0.0, ended - started - explained), 3),
            fixed={
                "planning": round(flowing - started, 3),
                "start_up": round(first - flowing, 3),
                "model_load": round(clock.load_s, 3),
                "finish": round(ended - last, 3),
            },
            per_segment={k: round(v / segments, 5) for k, v in per.items()},
        )
