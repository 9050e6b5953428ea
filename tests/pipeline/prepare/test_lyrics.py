"""Lyrics: text decoding, LRC parsing and alignment of lines to segment windows."""

from __future__ import annotations

import codecs

import pytest

from pipeline.prepare.lyrics import (
    LyricLine,
    decode_text,
    lines_in_window,
    looks_like_lrc,
    parse_lrc,
    parse_lyrics,
)

LRC = "[00:01.00]first\n[00:02.50]second\n"


def _times(text: str) -> list[tuple[float, str]]:
    return [(round(line.t, 6), line.text) for line in parse_lrc(text).lines]


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (codecs.BOM_UTF8 + "[00:01.00]café 你好".encode(), "utf-8 BOM"),
        (codecs.BOM_UTF16_LE + "[00:01.00]café 你好".encode("utf-16-le"), "utf-16-le BOM"),
        (codecs.BOM_UTF16_BE + "[00:01.00]café 你好".encode("utf-16-be"), "utf-16-be BOM"),
        ("[00:01.00]café 你好".encode("utf-16"), "utf-16 with its own BOM"),
        ("[00:01.00]café 你好".encode("utf-32"), "utf-32 BOM"),
        ("[00:01.00]café 你好".encode(), "utf-8 without BOM"),
    ],
)
def test_decode_text_honours_boms_and_strips_them(data, name):
    assert decode_text(data) == "[00:01.00]café 你好", name


def test_bomless_utf16_is_detected_from_nul_bytes():
    assert decode_text("[00:01.00]hello".encode("utf-16-le")) == "[00:01.00]hello"
    assert decode_text("[00:01.00]hello".encode("utf-16-be")) == "[00:01.00]hello"


def test_decode_text_falls_back_to_gb18030_for_chinese():
    text = "[00:01.00]我爱你中国\n[00:02.00]月亮代表我的心\n"
    assert decode_text(text.encode("gb18030")) == text


def test_decode_text_falls_back_to_cp1252_for_western_text():
    text = "[00:01.00]Café olé, l’été\n[00:02.00]naïve “quotes” – done\n"
    assert decode_text(text.encode("cp1252")) == text


@pytest.mark.parametrize(
    "text", ["für", "crème brûlée à la française", "[00:01.00]Ça va très bien, señor"]
)
def test_western_text_is_not_misread_as_gb18030(text):
    """Accent bytes pair with the next letter into valid gb18030; that must not win."""
    assert decode_text(text.encode("cp1252")) == text


def test_decode_text_never_raises_on_arbitrary_bytes():
    assert isinstance(decode_text(bytes(range(256)) * 3), str)
    assert decode_text(b"") == ""


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "seconds"),
    [
        ("[01:02]", 62.0),
        ("[01:02.5]", 62.5),
        ("[01:02.50]", 62.5),
        ("[01:02.505]", 62.505),
        ("[01:02:50]", 62.5),  # Colon before hundredths, as some taggers write it.
        ("[1:2.05]", 62.05),
        ("[100:00.00]", 6000.0),
    ],
)
def test_timestamp_forms(tag, seconds):
    assert _times(f"{tag}line") == [(seconds, "line")]


def test_metadata_tags_are_not_lyrics():
    text = "[ti:Title]\n[ar:Artist]\n[al:Album]\n[by:me]\n[length:03:20]\n[#:comment]\n" + LRC
    assert _times(text) == [(1.0, "first"), (2.5, "second")]


@pytest.mark.parametrize(
    ("offset", "shift"),
    [("+500", -0.5), ("500", -0.5), ("-250", 0.25), (" -1000 ", 1.0), ("0", 0.0)],
)
def test_offset_tag_shifts_times_positive_means_sooner(offset, shift):
    text = f"[offset:{offset}]\n[00:10.00]a\n[00:20.00]b\n"
    assert _times(text) == [(10.0 + shift, "a"), (20.0 + shift, "b")]


def test_offset_after_the_lines_still_applies_and_clamps_at_zero():
    assert _times("[00:00.20]early\n[00:03.00]late\n[offset:500]\n") == [
        (0.0, "early"),
        (2.5, "late"),
    ]


def test_malformed_offset_is_ignored():
    assert _times("[offset:soon]\n[00:01.00]a\n") == [(1.0, "a")]


def test_several_timestamps_on_one_line_give_one_line_each():
    assert _times("[00:03.00][00:33.00][01:03.00]chorus\n[00:10.00]verse\n") == [
        (3.0, "chorus"),
        (10.0, "verse"),
        (33.0, "chorus"),
        (63.0, "chorus"),
    ]


def test_out_of_order_lines_are_sorted_and_ties_keep_file_order():
    text = "[00:30.00]c\n[00:10.00]a\n[00:20.00]b1\n[00:20.00]b2\n"
    assert _times(text) == [(10.0, "a"), (20.0, "b1"), (20.0, "b2"), (30.0, "c")]


def test_enhanced_word_tags_are_removed_from_the_text():
    text = "[00:12.00]<00:12.00>Hello <00:12.50>big <00:13.10>world\n"
    assert _times(text) == [(12.0, "Hello big world")]


def test_timing_only_lines_and_untimed_lines_are_dropped():
    assert _times("[00:01.00]\nno time here\n[00:02.00]  sung  \n") == [(2.0, "sung")]


def test_parse_lyrics_separates_lrc_from_plain_text():
    lrc = parse_lyrics("[ar:x]\n" + LRC)
    assert lrc.aligned
    assert lrc.lines == (LyricLine(1.0, "first"), LyricLine(2.5, "second"))
    plain = parse_lyrics("\n  A plain verse  \nwith no timing\n\n")
    assert not plain.aligned
    assert plain.text == "A plain verse\nwith no timing"
    assert parse_lyrics("  \n").is_empty
    # Tags but no sung line: nothing to align, so it stays plain text.
    only_tags = parse_lyrics("[00:01.00]\n[00:02.00]\n")
    assert not only_tags.aligned


def test_looks_like_lrc():
    assert looks_like_lrc("intro\n  [00:01.00]x")
    assert not looks_like_lrc("[ar:someone]\nplain words")


# --- alignment ------------------------------------------------------------------------------


def test_each_window_gets_exactly_the_lines_starting_inside_it_relative_to_its_start():
    lyrics = parse_lrc(
        "[offset:-500]\n[00:00.00]a\n[00:01.49]b\n[00:01.50]c\n[00:03.999]d\n[00:05.50]e\n"
        "[09:00.00]past the end\n"
    )
    # After the -500 ms offset: a 0.5, b 1.99, c 2.0, d 4.499, e 6.0, past 540.5.
    windows = [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 7.0)]
    got = [[(line.t, line.text) for line in lines_in_window(lyrics, *w)] for w in windows]
    assert got == [
        [(0.5, "a"), (1.99, "b")],
        [(0.0, "c")],
        [(0.499, "d")],
        [(0.0, "e")],
    ]
    every = [text for window in got for _, text in window]
    assert sorted(every) == ["a", "b", "c", "d", "e"]  # Each once; "past the end" nowhere.


def test_line_exactly_on_the_default_segment_boundary_starts_the_next_segment():
    lyrics = parse_lrc("[00:35.84]boundary\n[00:35.83]before\n")
    first = lines_in_window(lyrics, 0.0, 1_720_320 / 48_000)
    second = lines_in_window(lyrics, 1_720_320 / 48_000, 2 * 1_720_320 / 48_000)
    assert [line.text for line in first] == ["before"]
    assert [(line.t, line.text) for line in second] == [(0.0, "boundary")]
