"""The dataset card: its numbers from a small hand-built dataset, its page, and the page in
Chromium (no errors, no sideways scrolling on a narrow window)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from pipeline.card.data import (
    MAX_SCATTER_POINTS,
    CardDuplicateGroup,
    CardInputs,
    CardSong,
    card_data,
)
from pipeline.card.html import card_html

HOSTILE = "<script>alert(1)</script>"
UNITS = {"loudness_lufs": "LUFS", "bandwidth_hz": "Hz", "true_peak_dbtp": "dBTP",
         "silence": "share"}  # fmt: skip
# (artist, split, songs, hours per song, segments per song); five artists, three splits.
ARTISTS = [("A", "train", 3, 1.0, 120), ("B", "train", 2, 0.5, 60), (HOSTILE, "train", 2, 0.1, 12),
           ("C", "validation", 3, 0.25, 30), ("D", "test", 2, 2.0, 240)]  # fmt: skip
LONG_PATH = "/music/" + "very-long-folder-name-" * 12 + "song.flac"  # One word, 280 chars.


def _songs() -> tuple[CardSong, ...]:
    """12 songs: loudness undefined for two, bandwidth NaN for one, true peak constant."""
    songs = []
    for artist, split, count, hours, segments in ARTISTS:
        for _ in range(count):
            i = len(songs)
            measures = {"loudness_lufs": None if i in (2, 7) else -14.0 - i,
                        "bandwidth_hz": math.nan if i == 4 else 16_000.0 + 500 * i,
                        "true_peak_dbtp": -1.0}  # fmt: skip
            songs.append(CardSong(f"song{i:02d}", artist, split, hours, segments, measures))
    return tuple(songs)


@pytest.fixture
def inputs() -> CardInputs:
    groups = (
        CardDuplicateGroup(0, (("song00", "/music/a.flac", True), ("x1", "/music/a.mp3", False))),
        CardDuplicateGroup(1, (("song05", '"><img src=x onerror=alert(1)>', True),
                               ("x2", LONG_PATH, False))),
    )  # fmt: skip
    rejects = {"filter:digital_silence": 2, "duplicate": 3, "decode": 3}
    return CardInputs("s3://catalog/<b>input</b>", _songs(), rejects, groups, UNITS)


def test_totals_and_splits_add_up_per_split(inputs):
    card = card_data(inputs)
    assert list(card["splits"]) == ["train", "validation", "test"]
    train, validation, test = card["splits"].values()
    assert train == {"songs": 7, "segments": 3 * 120 + 2 * 60 + 2 * 12, "hours": 4.2, "artists": 3}
    assert validation == {"songs": 3, "segments": 90, "hours": 0.75, "artists": 1}
    assert test == {"songs": 2, "segments": 480, "hours": 4.0, "artists": 1}
    assert card["totals"] == {"songs": 12, "segments": 1074, "hours": 8.95, "artists": 5}
    assert card["version"] == 1 and card["title"] == inputs.title


def test_empty_splits_are_listed_with_zeros(inputs):
    only_train = replace(inputs, songs=tuple(s for s in inputs.songs if s.split == "train"))
    splits = card_data(only_train)["splits"]
    assert list(splits) == ["train", "validation", "test"]
    assert splits["test"] == {"songs": 0, "segments": 0, "hours": 0.0, "artists": 0}


def test_rejects_are_ordered_by_count_then_reason(inputs):
    rejects = card_data(inputs)["rejects"]
    assert list(rejects.items()) == [("decode", 3), ("duplicate", 3),
                                     ("filter:digital_silence", 2)]  # fmt: skip


def test_measures_count_finite_values_and_histograms_hold_them_all(inputs):
    measures = card_data(inputs)["measures"]
    assert list(measures) == list(UNITS)
    loudness = measures["loudness_lufs"]
    assert (loudness["unit"], loudness["count"], loudness["undefined"]) == ("LUFS", 10, 2)
    values = sorted(-14.0 - i for i in range(12) if i not in (2, 7))
    assert loudness["median"] == pytest.approx((values[4] + values[5]) / 2)
    assert loudness["p10"] < loudness["median"] < loudness["p90"]
    histogram = loudness["histogram"]
    assert len(histogram["counts"]) == 30 and len(histogram["edges"]) == 31
    assert (histogram["edges"][0], histogram["edges"][-1]) == (values[0], values[-1])
    assert sum(histogram["counts"]) == 10
    assert measures["bandwidth_hz"]["count"] == 11  # NaN is undefined, as None is.
    assert sum(measures["bandwidth_hz"]["histogram"]["counts"]) == 11
    peak = measures["true_peak_dbtp"]  # One value throughout: one bin.
    assert peak["histogram"] == {"edges": [-1.0, -1.0], "counts": [12]}
    assert peak["median"] == peak["p10"] == peak["p90"] == -1.0
    silence = measures["silence"]  # No song has it.
    assert (silence["count"], silence["median"], silence["histogram"]["counts"]) == (0, None, [])


def test_scatter_keeps_songs_with_both_loudness_and_bandwidth(inputs):
    points = card_data(inputs)["loudness_vs_bandwidth"]
    assert len(points) == 12 - 3
    assert all(len(p) == 3 and p[2] in ("train", "validation", "test") for p in points)
    assert [-16.0, 17_000.0, "train"] not in points  # song02: loudness undefined.


def test_scatter_is_capped_by_a_choice_independent_of_song_order():
    songs = tuple(CardSong(f"s{i}", f"artist{i % 50}", "train", 0.01, 1,
                           {"loudness_lufs": -float(i % 40), "bandwidth_hz": float(i)})
                  for i in range(6_000))  # fmt: skip
    first = card_data(CardInputs("t", songs, {}, (), {}))["loudness_vs_bandwidth"]
    again = card_data(CardInputs("t", songs[::-1], {}, (), {}))["loudness_vs_bandwidth"]
    assert len(first) == MAX_SCATTER_POINTS
    assert first == again


def test_top_artists_by_hours_with_their_splits(inputs):
    top = card_data(replace(inputs, songs=(*inputs.songs, CardSong("z", "A", "test", 0.5, 6, {}))))
    artists = top["top_artists"]
    assert [a["artist"] for a in artists] == ["D", "A", "B", "C", HOSTILE]
    assert artists[0] == {"artist": "D", "hours": 4.0, "songs": 2, "splits": ["test"]}
    assert artists[1] == {"artist": "A", "hours": 3.5, "songs": 4, "splits": ["test", "train"]}


def test_duplicate_groups_list_members_and_the_kept_one(inputs):
    groups = card_data(inputs)["duplicate_groups"]
    assert groups["count"] == 2
    assert groups["groups"][0] == [
        {"song_id": "song00", "source": "/music/a.flac", "kept": True},
        {"song_id": "x1", "source": "/music/a.mp3", "kept": False},
    ]


def test_the_card_survives_a_strict_json_round_trip(inputs):
    card = card_data(inputs)
    assert json.loads(json.dumps(card, allow_nan=False)) == card
    empty = card_data(CardInputs("t", (), {}, (), UNITS))
    assert json.loads(json.dumps(empty, allow_nan=False)) == empty


def test_the_page_draws_a_histogram_per_measure_and_the_scatter(inputs):
    page = card_html(card_data(inputs))
    assert page.count("<svg") == 3 + 1  # Loudness, bandwidth, true peak; silence has none.
    assert page.count('<figure class="chart">') == len(UNITS)
    assert "No defined values" in page  # Silence.
    assert "loudness (LUFS)" in page and "bandwidth_hz (Hz)" in page
    assert all(f"{split} (" in page for split in ("train", "validation", "test"))  # Legend.


def test_the_page_escapes_every_text_from_the_data(inputs):
    page = card_html(card_data(inputs))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert "<img" not in page.lower() and "&lt;img src=x" in page
    assert "<b>" not in page and "&lt;b&gt;input&lt;/b&gt;" in page


def test_an_empty_card_says_so_rather_than_drawing_empty_charts():
    page = card_html(card_data(CardInputs("s3://empty", (), {}, (), {"loudness_lufs": "LUFS"})))
    for text in ("No songs rejected.", "No defined values.", "No song has both",
                 "No duplicates found.", "No songs kept."):  # fmt: skip
        assert text in page
    assert "<svg" not in page
    assert "No measures." in card_html(card_data(CardInputs("t", (), {}, (), {})))


def test_the_page_opens_in_chromium_without_errors_and_fits_a_narrow_window(inputs, tmp_path):
    from tests.pipeline.helpers import open_in_chromium, png_pixels

    path = tmp_path / "card.html"
    path.write_text(card_html(card_data(inputs)), encoding="utf-8")
    errors, images, audios = open_in_chromium(path, tmp_path / "card.png", viewport_width=700)
    assert errors == []  # Console errors and failed requests alike.
    assert images == [] and audios == []  # Self-contained: nothing to fetch.
    # A full-page screenshot is as wide as the document: wider than 700 px if it scrolls.
    assert png_pixels((tmp_path / "card.png").read_bytes()).shape[1] == 700
