"""Compute precision: the one `Precision` argument, and regions that must stay float32.

A tokenizer or decoder is given its precision once, when it is built or loaded
(`precision="bfloat16"`); it is not a setting to flip afterwards. Weights stay float32;
the precision names the autocast dtype of the heavy parts, and `float32_region` guards the
steps whose accuracy needs float32 whatever the precision.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator
from typing import Literal

import torch

Precision = Literal["float32", "bfloat16", "float16"]
"""Autocast dtype of the heavy parts; "float32" means no autocast."""

PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype a precision stands for.

    Args:
        precision: One of `PRECISIONS`.

    Returns:
        `torch.bfloat16` or `torch.float16`; None for "float32" (no autocast).

    Raises:
        ValueError: naming the precision when it is not one of `PRECISIONS`.
    """
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return _DTYPES[precision]


@contextlib.contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Disables autocast on `device` for the block (no-op where autocast does not exist).

    Used for the mel front end (a bf16 filterbank matmul would cost ~0.5 dB of precision)
    and for the code lookup (an argmax over cosine similarities whose margins can be far
    below bf16 resolution). Both are a negligible share of the FLOPs.

    Args:
        device: The device whose autocast is disabled.

    Yields:
        Nothing; the block runs with autocast off.
    """
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield
