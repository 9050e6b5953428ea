"""What a person running a job sees: one progress bar per stage, one summary table at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tqdm import tqdm

from jobs.cli import exit_status
from pipeline.execution import job_stdout

T = TypeVar("T")

# Status words of the summary table, by exit status.
STATUS_WORDS = {0: "ok", 1: "FAILED", 2: "REFUSED", 130: "INTERRUPTED", 143: "INTERRUPTED"}


def stage_bar(description: str, unit: str) -> tqdm:
    """A stage's progress bar on stderr; in a log file, a status line every 30 s instead."""
    # `delay`: no empty "0it" bar before the stage knows its total.
    if sys.stderr.isatty():
        return tqdm(desc=description, unit=unit, dynamic_ncols=True, mininterval=0.2, delay=0.5)
    return tqdm(desc=description, unit=unit, file=_StatusLines(), ncols=100, mininterval=30.0,
                delay=0.5)  # fmt: skip


class _StatusLines:
    """A file for tqdm that writes each redraw as its own line (a log has no carriage return)."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            print(line, file=sys.stderr, flush=True)

    def flush(self) -> None:
        sys.stderr.flush()


@dataclass(frozen=True)
class StageOutcome:
    """One row of the summary table: what a stage did and where its results are."""

    stage: str
    status: int
    result: str = ""
    rejects: int | None = None
    wall_seconds: float | None = None
    output: str = ""
    details: tuple[str, ...] = ()  # Lines printed under the row (one per codec, ...).


def run_stage(
    stage: str,
    unit: str,
    work: Callable[[tqdm], T],
    unfinished: Callable[[T], str | None],
    outcome: Callable[[T, int], StageOutcome],
) -> StageOutcome:
    """Run `work(bar)` under the stage's progress bar and return the stage's summary row.

    A usage error is a REFUSED row (status 2); `unfinished(summary)` words what is left for a
    rerun (status 1), or is None. The bar is closed before any message is printed: a bar
    redrawn after it would bury it.
    """
    started = time.perf_counter()
    bar = stage_bar(stage, unit)
    try:
        summary = work(bar)
    except Exception as error:
        if exit_status(error) != 2:
            raise
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return StageOutcome(stage, 2, wall_seconds=time.perf_counter() - started)
    finally:
        bar.close()
    left = unfinished(summary)
    if left:
        print(f"error: {left}; rerun the same command to finish", file=sys.stderr)
    return outcome(summary, 1 if left else 0)


def format_outcomes(outcomes: list[StageOutcome]) -> str:
    """The summary table, aligned for a terminal."""
    header = ("stage", "status", "result", "rejects", "wall", "output")
    rows = [header] + [
        (
            o.stage,
            STATUS_WORDS.get(o.status, f"exit {o.status}"),
            o.result,
            "" if o.rejects is None else f"{o.rejects:,}",
            "" if o.wall_seconds is None else _duration(o.wall_seconds),
            o.output,
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {3, 4}  # Numbers line up on the right.
    lines = []
    indent = " " * (widths[0] + widths[1] + 4)  # Details sit under the result column.
    for row, details in zip(rows, [(), *(o.details for o in outcomes)], strict=True):
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
        lines += [indent + detail for detail in details]
    return "\n".join(lines)


def print_outcomes(outcomes: list[StageOutcome]) -> None:
    """Prints the summary table of `outcomes` on the job's stdout, at once (flushed)."""
    print(format_outcomes(outcomes), file=job_stdout(), flush=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours_, minutes = divmod(minutes, 60)
    return f"{hours_}h{minutes:02d}m"
