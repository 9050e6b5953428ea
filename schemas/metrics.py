"""Spotcheck's `metrics.parquet`: one row of reconstruction metrics per decoded sample and codec.

`codec` names the codec that decoded the row (audio_codecs.registry), `bitrate_kbps` its
codes' nominal bitrate; `decoder_steps` and `guidance_scale` are 0 for codecs without a
flow-matching sampler.

Distances are unitless (lower is closer), `si_sdr_db` in dB (NaN for a silent reference),
`loudness_diff_lu` in LU (reconstruction minus reference; +-inf when either is silent),
times in seconds; `n_frames` counts the codec's token frames.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.version import check_version

METRICS_SCHEMA_VERSION = 2  # 2: `codec`, `bitrate_kbps` (several codecs per spot-check).

METRICS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("codec", pa.string(), nullable=False),
        pa.field("bitrate_kbps", pa.float64(), nullable=False),
        pa.field("song_id", pa.string(), nullable=False),
        pa.field("segment_index", pa.int64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("mel_distance", pa.float64(), nullable=False),
        pa.field("stft_distance", pa.float64(), nullable=False),
        pa.field("si_sdr_db", pa.float64(), nullable=False),
        pa.field("loudness_diff_lu", pa.float64(), nullable=False),
        pa.field("decoder_steps", pa.int64(), nullable=False),
        pa.field("guidance_scale", pa.float64(), nullable=False),
    ],
    metadata={"schema": "spotcheck-metrics", "schema_version": str(METRICS_SCHEMA_VERSION)},
)


def check_metrics_schema(schema: pa.Schema, where: str) -> None:
    """Refuse a metrics table of a version this code does not read.

    Raises:
        UnsupportedVersion: The schema metadata's version is not `METRICS_SCHEMA_VERSION`.
    """
    found = (schema.metadata or {}).get(b"schema_version")
    check_version(found.decode() if found else None, METRICS_SCHEMA_VERSION, "metrics table", where)
