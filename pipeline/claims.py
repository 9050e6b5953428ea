"""One output, one run: a stage records what it is producing and refuses a different run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pipeline.io import exists, join, read_json, write_json


class OutputInUse(RuntimeError):
    """The output already holds a run of different inputs or settings."""


def claim_output(
    fs,
    root: str,
    run_file: str,
    claim: dict[str, Any],
    owned: Iterable[str],
    force: bool,
    describe: Callable[[dict[str, Any]], str],
) -> None:
    """Record `claim` at `root/run_file`, resuming when it matches the one already there.

    A different claim is refused (the outputs would mix) unless `force`, which first deletes
    the stage's `owned` paths under `root`. `describe(previous)` words the refusal.
    """
    run_path = join(root, run_file)
    if exists(fs, run_path):
        previous = read_json(fs, run_path)
        if previous != claim:
            if not force:
                raise OutputInUse(
                    f"{root} holds {describe(previous)}; use a new --output, or --force to "
                    "replace it"
                )
            for name in owned:
                path = join(root, name)
                if fs.exists(path):
                    fs.rm(path, recursive=True)
    write_json(fs, run_path, claim)
