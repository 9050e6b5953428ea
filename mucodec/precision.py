"""Precision regions: parts of the encoder that must stay float32 under bf16 autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Disables autocast on `device` for the block (no-op where autocast does not exist).

    Used for the mel front end (a bf16 filterbank matmul would cost ~0.5 dB of precision)
    and for the code lookup (an argmax over cosine similarities whose margins can be far
    below bf16 resolution). Both are a negligible share of the FLOPs.
    """
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield
