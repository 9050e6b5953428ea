"""The libchromaprint binding: prints from decoded blocks, however they are cut.

A print must not depend on how the decoder sized its blocks, must stop at `max_seconds`,
must clip loud float audio rather than wrap it, and must be empty (not an error) for audio
too short to fingerprint; a missing library names the package to install.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.quality import chromaprint
from pipeline.quality.chromaprint import (
    ITEM_SECONDS,
    ChromaprintUnavailable,
    Fingerprinter,
    fingerprint_blocks,
    library,
    open_library,
)
from testing.synth import synth_song

RATE = 44_100


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    """20 s of synthetic stereo music at 44.1 kHz."""
    return synth_song(20.0, RATE, 2, seed=7)


@pytest.fixture(scope="module")
def song_print(song: np.ndarray) -> np.ndarray:
    return fingerprint_blocks([song], RATE, 2)


def test_a_print_is_uint32_items_one_per_item_duration(song_print: np.ndarray) -> None:
    assert song_print.dtype == np.uint32
    # The first item needs about 2.7 s of audio; one more follows every ITEM_SECONDS.
    assert abs(len(song_print) - (20.0 - 2.7) / ITEM_SECONDS) <= 2
    assert len(np.unique(song_print)) > len(song_print) // 2  # Music, not a constant.


def test_item_seconds_is_what_the_library_reports() -> None:
    lib = library()
    context = lib.chromaprint_new(chromaprint.ALGORITHM_DEFAULT)
    try:
        reported = lib.chromaprint_get_item_duration(context)
        reported /= lib.chromaprint_get_sample_rate(context)
    finally:
        lib.chromaprint_free(context)
    assert pytest.approx(reported) == ITEM_SECONDS


def test_odd_block_sizes_give_the_same_print_as_one_block(
    song: np.ndarray, song_print: np.ndarray
) -> None:
    cuts = np.cumsum([1, 7, 4095, 44_101, 3, 100_000, 12_345])
    blocks = np.split(song, cuts)
    assert sum(len(block) for block in blocks) == len(song)
    np.testing.assert_array_equal(fingerprint_blocks(blocks, RATE, 2), song_print)


def test_audio_past_max_seconds_is_ignored(song: np.ndarray) -> None:
    ten_seconds = fingerprint_blocks([song[: 10 * RATE]], RATE, 2)
    printer = Fingerprinter(RATE, 2, max_seconds=10.0)
    for block in np.array_split(song, 4):  # 5 s blocks: the limit falls inside the second.
        printer.feed(block)
    np.testing.assert_array_equal(printer.finish(), ten_seconds)


def test_loud_float_audio_is_clipped_not_wrapped(song: np.ndarray) -> None:
    loud = song[: 8 * RATE] * 4.0
    clipped = np.clip(loud, -1.0, 1.0)
    np.testing.assert_array_equal(
        fingerprint_blocks([loud], RATE, 2), fingerprint_blocks([clipped], RATE, 2)
    )


def test_too_short_audio_gives_an_empty_print(song: np.ndarray) -> None:
    short = fingerprint_blocks([song[: 2 * RATE]], RATE, 2)
    assert short.dtype == np.uint32
    assert len(short) == 0
    assert len(fingerprint_blocks([], RATE, 2)) == 0


def test_mono_and_other_rates_fingerprint(song: np.ndarray) -> None:
    mono = song[: 8 * RATE].mean(axis=1, keepdims=True)
    assert len(fingerprint_blocks([mono], RATE, 1)) > 0
    assert len(fingerprint_blocks([synth_song(8.0, 8_000, 2, seed=7)], 8_000, 2)) > 0


def test_misuse_is_refused(song: np.ndarray) -> None:
    printer = Fingerprinter(RATE, 2)
    with pytest.raises(ValueError, match="expected"):
        printer.feed(song[:100, :1])
    printer.feed(song[: 4 * RATE])
    assert len(printer.finish()) > 0
    with pytest.raises(RuntimeError, match="after finish"):
        printer.feed(song[:100])
    with pytest.raises(RuntimeError, match="twice"):
        printer.finish()
    with pytest.raises(ValueError, match="invalid format"):
        Fingerprinter(0, 2)


def test_a_missing_library_names_the_package_to_install(monkeypatch) -> None:
    with pytest.raises(ChromaprintUnavailable, match="libchromaprint1") as raised:
        open_library("libchromaprint-missing.so.0")
    assert "near-duplicate" in str(raised.value)
    missing = "libchromaprint-missing.so.0"
    monkeypatch.setattr(chromaprint, "library", lambda: open_library(missing))
    with pytest.raises(ChromaprintUnavailable, match="apt-get install libchromaprint1"):
        Fingerprinter(RATE, 2)
