"""A token row back to the `EncodedSegment` its codec decodes: codes reshaped, side data.

Token tables store `codes` as `[channels * n_codebooks][n_frames]` nested lists and the
codec's side data in their own columns (schemas/tokens.py); `Codec.decode` takes
`EncodedSegment`s. `encoded_segment` is the one place that turns one into the other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from audio_codecs.base import EncodedSegment


def encoded_segment(row: dict[str, Any]) -> EncodedSegment:
    """The `EncodedSegment` a token row holds, ready for its codec's `decode`.

    Args:
        row: A token table row as a dict (`Table.to_pylist()` item) with at least `codes`,
            `n_codebooks`, `n_frames` and `channels`; `scales`, `chunk_frames` and
            `input_db` are read when present (missing: no side data).

    Returns:
        Codes `[channels * n_codebooks, n_frames]` uint16, scales float32 `[n_chunks]`
        (empty unless the codec has them), chunk_frames (empty unless chunked), input_db
        (NaN unless DAC compress).

    Raises:
        ValueError: `codes` do not have the shape the row's columns give.
    """
    rows = int(row["channels"]) * int(row["n_codebooks"])
    frames = int(row["n_frames"])
    codes = np.asarray(row["codes"], dtype=np.uint16)
    if codes.size != rows * frames:
        raise ValueError(
            f"row {row.get('key', '?')}: {codes.size} codes, expected {rows} x {frames}"
        )
    input_db = row.get("input_db")
    return EncodedSegment(
        codes=codes.reshape(rows, frames),
        scales=np.asarray(row.get("scales") or [], dtype=np.float32),
        chunk_frames=tuple(int(f) for f in row.get("chunk_frames") or ()),
        input_db=math.nan if input_db is None else float(input_db),
    )
