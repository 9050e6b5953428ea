"""Ray start-up shared by the jobs: in-process locally, or joining a cluster."""

from __future__ import annotations

import logging
import os


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join `address` (or RAY_ADDRESS) if given, else start a local in-process Ray.

    The local instance gets no dashboard and quiet logs: a laptop trial should not open ports
    or print pages of start-up noise.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    # The per-operator progress bars are what a person watches; the verbose plan is not.
    ray.data.DataContext.get_current().print_on_execution_start = False
