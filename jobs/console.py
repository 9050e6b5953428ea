"""What a person running a job sees: one progress bar per stage, one summary table at the end."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from tqdm import tqdm

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
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]  # fmt: skip
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def print_outcomes(outcomes: list[StageOutcome]) -> None:
    print(format_outcomes(outcomes), flush=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours_, minutes = divmod(minutes, 60)
    return f"{hours_}h{minutes:02d}m"
