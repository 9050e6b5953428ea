"""The survey: what prepare must know of every song before it plans units.

Splits keep artists and near-duplicate groups together, and `--dedupe keep-best` keeps one
song of each group: both are decisions over the whole catalog, so they are taken before any
song is cut, never by a unit that sees 32 songs. The sha256 pass (fingerprint.py) surveys
each file it hashes anew, in the same task, reading from its first `SURVEY_SECONDS`:

- its Chromaprint fingerprint (pipeline/quality/chromaprint.py), from the decoded blocks;
- its effective bandwidth, and its codec and declared length (the keep-best rule's facts);
- the artist and album its tags name (ID3, Vorbis comments, MP4 atoms, RIFF INFO).

Results are cached in `_prepare/survey.parquet` by the file's sha256: the same bytes give
the same survey, so a rerun, a renamed file or another run pointed at this output's cache
never decodes them again. A file that cannot be decoded gets no fingerprint here (its unit
rejects it with the reason); a failure of the environment leaves its song unhashed and its
unit unfinished for a rerun, as the sha256 pass does for its own reads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.errors import EnvironmentFailure, describe, is_environment_failure
from pipeline.io import StorageOptions, exists, join
from pipeline.parquet_files import read_parquet, write_parquet
from pipeline.prepare.audio import local_copy, open_audio
from pipeline.prepare.dsp import to_stereo
from pipeline.prepare.records import SongSource
from pipeline.quality.chromaprint import Fingerprinter
from pipeline.quality.measures import BIN_HZ, spectrum_bandwidth

log = logging.getLogger(__name__)

SURVEY_FILE = "_prepare/survey.parquet"
# The start of a song identifies it: 60 s leave 45 s to match after a trim of 15 s (the
# most the matching allows), and decode half of what fpcalc's default 120 s would.
SURVEY_SECONDS = 60.0
_SPECTRUM_STRIDE = 4  # Every 4th window feeds the bandwidth: steady over a minute.
SURVEY_VERSION = 1

SURVEY_SCHEMA = pa.schema(
    [
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("codec", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("bandwidth_hz", pa.float64()),
        pa.field("artist", pa.string()),
        pa.field("album", pa.string()),
        pa.field("fingerprint", pa.list_(pa.uint32())),
        pa.field("error", pa.string()),  # The file's fault: no fingerprint, its unit says why.
    ],
    metadata={"schema": "prepare-survey", "schema_version": str(SURVEY_VERSION)},
)


@dataclass(frozen=True)
class Survey:
    """Survey rows by sha256 (less the key), and how many were decoded this run."""

    rows: dict[str, dict[str, Any]]
    surveyed: int  # Files decoded this run; the others came from the cache.
    seconds: float  # Spent decoding them, summed over the workers.


def survey_file(source: str, storage: StorageOptions) -> dict[str, Any]:
    """One file's survey row (without `sha256`); an undecodable file has `error` set."""
    scratch = tempfile.mkdtemp(prefix="prepare-survey-")
    extension = source.rsplit(".", 1)[-1].lower() if "." in source else ""
    try:
        with local_copy(source, storage, scratch) as path, open_audio(path, extension) as stream:
            info = stream.info
            printer = Fingerprinter(info.sample_rate, 2, SURVEY_SECONDS)
            spectrum = _Spectrum(info.sample_rate)
            decoded = 0
            for block in _first(stream.blocks, int(SURVEY_SECONDS * info.sample_rate)):
                stereo = to_stereo(block)
                printer.feed(stereo)
                spectrum.feed(stereo)
                decoded += len(block)
            fingerprint = printer.finish()
        seconds = info.declared.seconds or decoded / info.sample_rate
        return {
            "codec": info.codec,
            "duration_s": max(seconds, decoded / info.sample_rate),
            "bandwidth_hz": spectrum.bandwidth(),
            "artist": info.artist,
            "album": info.album,
            "fingerprint": fingerprint.tolist(),
            "error": None,
        }
    except EnvironmentFailure:
        raise
    except Exception as error:  # The unit decodes it again and rejects it with the reason.
        if is_environment_failure(error):
            raise
        return {"error": describe(error)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _first(blocks: Iterator[np.ndarray], frames: int) -> Iterator[np.ndarray]:
    """The blocks up to `frames`; the decoder is closed with the stream, not drained."""
    for block in blocks:
        yield block[:frames]
        frames -= len(block)
        if frames <= 0:
            return


class _Spectrum:
    """The mean power spectrum of the stereo sum at the source rate, over Hann windows with
    the bins of the segment measures (`BIN_HZ`), so the same bandwidth rule reads it."""

    def __init__(self, rate: int) -> None:
        self._window = round(rate / BIN_HZ)
        self._taper = np.hanning(self._window).astype(np.float32)
        self._power = np.zeros(self._window // 2 + 1)
        self._count = 0

    def feed(self, stereo: np.ndarray) -> None:
        whole = len(stereo) // self._window * self._window
        if not whole:
            return
        frames = stereo[:whole].sum(axis=1).reshape(-1, self._window)[::_SPECTRUM_STRIDE]
        frames = frames * self._taper
        self._power += (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
        self._count += len(frames)

    def bandwidth(self) -> float:
        return spectrum_bandwidth(self._power / max(self._count, 1))


def update_survey(
    fs, root: str, cached: dict[str, dict[str, Any]], songs: tuple[SongSource, ...],
    fresh: dict[str, dict[str, Any]], seconds: float,
) -> Survey:  # fmt: skip
    """The surveys of `songs`' files: the `cached` ones (`read_survey`), with `fresh` (this
    run's, by sha256) added; the cache is rewritten to hold the current files' surveys."""
    current = {s.source_sha256 for s in songs if s.source_sha256}
    rows = {sha: row for sha, row in {**cached, **fresh}.items() if sha in current}
    if fresh or rows.keys() != cached.keys():
        table = pa.Table.from_pylist(
            [{"sha256": sha, **rows[sha]} for sha in sorted(rows)], schema=SURVEY_SCHEMA
        )
        write_parquet(fs, join(root, SURVEY_FILE), table)
    log.info("survey: %d files, %d decoded now (the rest cached), %.1f s",
             len(rows), len(fresh), seconds)  # fmt: skip
    return Survey(rows, len(fresh), seconds)


def read_survey(fs, path: str) -> dict[str, dict[str, Any]]:
    """Survey rows by sha256 from `path`; empty when absent or of another version."""
    if not exists(fs, path):
        return {}
    try:
        table = read_parquet(fs, path)
    except (OSError, pa.ArrowException) as error:
        if is_environment_failure(error):
            raise
        log.warning("ignoring the survey cache %s: %s", path, describe(error))
        return {}
    if (table.schema.metadata or {}).get(b"schema_version") != str(SURVEY_VERSION).encode():
        log.warning("ignoring the survey cache %s: another version", path)
        return {}
    return {row["sha256"]: row for row in table.to_pylist()}
