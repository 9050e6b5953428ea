"""Benchmarks: `python -m jobs.bench {prepare,quality,encoder,decoder,tokenize,codecs,faults,gpu}`.

Each benchmark lives in `jobs/benchmarks/<name>.py` and exposes `add_arguments(parser)` and
`run(args) -> dict`; this module only dispatches and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json

from pipeline.execution import job_stdout

BENCHMARKS = (
    "prepare", "quality", "encoder", "decoder", "tokenize", "codecs", "faults", "gpu",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark named on the command line and prints its result as JSON.

    Args:
        argv: Arguments after `python -m jobs.bench`; None reads `sys.argv`.

    Returns:
        The exit status, 0 (a failing benchmark raises).
    """
    parser = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__)
    commands = parser.add_subparsers(dest="benchmark", required=True)
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"jobs.benchmarks.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"jobs.benchmarks.{name}":
                raise
            continue
        doc = (module.__doc__ or "").strip()
        sub = commands.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,  # --help shows what the benchmark measures, and how.
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    result = args.run(args)
    # The benchmarks that start Ray leave it running: job_stdout, not sys.stdout, is stdout.
    json.dump(result, job_stdout(), indent=2)
    print(file=job_stdout(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
