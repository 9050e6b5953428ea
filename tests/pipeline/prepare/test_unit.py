"""A unit of work through `prepare_unit` (no Ray): shard contents, fidelity, tails, lyrics,
gain, rejects, roll-over and determinism.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from pipeline.claims import Superseded, claim_output
from pipeline.io import StorageOptions, filesystem
from pipeline.prepare.dsp import to_stereo
from pipeline.prepare.records import SongSource
from pipeline.prepare.unit import Unit, UnitResult, load_marker, marker_path, prepare_unit
from schemas.shard_sample import validate_sample_metadata
from tests.pipeline.helpers import (
    TEST_RUN_FILE,
    claimed,
    limits,
    read_samples,
    reference_48k,
    run_unit,
    shard_files,
    small_config,
    snr_db,
    song_audio,
    tar_members,
    write_song,
)

RATE = 48_000


def _song(root, name: str, song_id: str | None = None, **kwargs) -> tuple[SongSource, np.ndarray]:
    path = os.path.join(root, name)
    audio = write_song(path, **kwargs)
    return SongSource(song_id or name.rsplit(".", 1)[0].replace(" ", "-"), path), audio


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus"
    path.mkdir()
    return str(path)


def test_samples_have_safe_keys_adjacent_members_and_valid_metadata(corpus, tmp_path, scratch):
    a, _ = _song(corpus, "a.flac", seconds=2.5, rate=44_100, channels=1)
    b, _ = _song(corpus, "b.wav", seconds=1.5, rate=96_000, channels=6, subtype="PCM_24")
    output = str(tmp_path / "out")
    result = run_unit([a, b], output, small_config(scratch))
    assert (result.songs, result.songs_ok, result.rejects) == (2, 2, [])
    samples = read_samples(shard_files(output))  # Also asserts members are adjacent.
    assert [s.key for s in samples] == ["a_00000", "a_00001", "a_00002", "b_00000", "b_00001"]
    assert result.segments == len(samples)
    for sample in samples:
        validate_sample_metadata(sample.meta)
        info = sample.info()
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            48_000, 2, "FLAC", "PCM_16",
        )  # fmt: skip
        assert info.frames == round(sample.meta["duration_s"] * RATE)
        assert sample.meta["key"] == sample.key
    meta_a = [s.meta for s in samples if s.meta["song_id"] == "a"]
    assert [m["start_s"] for m in meta_a] == [0.0, 1.0, 2.0]
    assert [m["duration_s"] for m in meta_a] == [1.0, 1.0, 0.5]
    assert {m["song_segments"] for m in meta_a} == {3}
    assert (meta_a[0]["source_sample_rate"], meta_a[0]["source_channels"]) == (44_100, 1)
    assert meta_a[0]["source_codec"] == "FLAC/PCM_16"
    assert meta_a[0]["source_duration_s"] == pytest.approx(2.5)
    assert result.audio_seconds == pytest.approx(2.5 + 1.5)
    # The unit's marker records exactly what was written.
    marker = load_marker(output, Unit(0, (a, b)), small_config(scratch).storage)
    assert marker is not None and marker.shards == result.shards
    assert os.path.exists(marker_path(output, 0))
    assert not os.listdir(scratch), "scratch files must be cleaned up"


def test_48k_16bit_source_is_stored_unchanged(corpus, tmp_path, scratch):
    song, source = _song(corpus, "s.flac", seconds=2.3, rate=48_000, channels=2)
    output = str(tmp_path / "out")
    run_unit([song], output, small_config(scratch))
    stored = song_audio(read_samples(shard_files(output)), "s")
    assert stored.shape == source.shape
    np.testing.assert_allclose(stored, source, atol=1e-3)
    assert np.abs(stored - source).max() <= 1 / 32768


@pytest.mark.parametrize(
    ("name", "rate", "channels", "subtype"),
    [
        ("cd.wav", 44_100, 2, "PCM_16"),
        ("hires.flac", 96_000, 2, "PCM_24"),
        ("phone.wav", 8_000, 1, "PCM_16"),
        ("studio.wav", 192_000, 2, "FLOAT"),
        ("quad.wav", 22_050, 4, "PCM_16"),
    ],
)
def test_resampled_shard_audio_matches_a_reference_resample_of_the_source(
    corpus, tmp_path, scratch, name, rate, channels, subtype
):
    song, source = _song(corpus, name, "x", seconds=2.4, rate=rate, channels=channels,
                         subtype=subtype)  # fmt: skip
    output = str(tmp_path / "out")
    run_unit([song], output, small_config(scratch))
    stored = song_audio(read_samples(shard_files(output)), "x")
    reference = reference_48k(to_stereo(source), rate)
    assert stored.shape == reference.shape
    assert snr_db(reference, stored) > 60  # 16-bit storage of a -3 dBFS song: ~85 dB.


@pytest.mark.parametrize(
    ("policy", "durations", "padding"),
    [
        ("keep", [1.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0]),
        ("pad", [1.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.5]),
        ("drop", [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
    ],
)
def test_tail_policies(corpus, tmp_path, scratch, policy, durations, padding):
    song, source = _song(corpus, "t.flac", seconds=3.5)
    output = str(tmp_path / "out")
    result = run_unit([song], output, small_config(scratch, tail_policy=policy))
    samples = read_samples(shard_files(output))
    assert [s.meta["duration_s"] for s in samples] == durations
    assert [s.meta["padding_s"] for s in samples] == padding
    assert result.segments == len(durations)
    assert {s.meta["song_segments"] for s in samples} == {len(durations)}
    last = samples[-1].audio()
    assert len(last) == round((durations[-1] + padding[-1]) * RATE)
    if policy == "pad":
        assert not last[round(0.5 * RATE) :].any()  # The padding is silence.
        np.testing.assert_allclose(last[: round(0.5 * RATE)], source[3 * RATE :], atol=1e-4)


def test_tail_shorter_than_the_minimum_is_dropped(corpus, tmp_path, scratch):
    song, _ = _song(corpus, "t.flac", seconds=3.2)
    output = str(tmp_path / "out")
    config = small_config(scratch, tail_policy="keep", min_tail_seconds=0.3)
    assert run_unit([song], output, config).segments == 3


def test_default_35_84_second_segments(corpus, tmp_path, scratch):
    song, source = _song(corpus, "long.flac", seconds=35.84 + 12.0, rate=48_000, channels=2)
    output = str(tmp_path / "out")
    config = small_config(scratch, segment_seconds=35.84, min_tail_seconds=10.0)
    run_unit([song], output, config)
    samples = read_samples(shard_files(output))
    assert [s.key for s in samples] == ["long_00000", "long_00001"]
    assert [s.info().frames for s in samples] == [1_720_320, 576_000]
    np.testing.assert_allclose(song_audio(samples, "long"), source, atol=1e-3)


def test_float_source_above_full_scale_gets_gain_so_nothing_clips(corpus, tmp_path, scratch):
    song, source = _song(corpus, "hot.wav", seconds=2.0, subtype="FLOAT", peak=1.5)
    quiet, _ = _song(corpus, "quiet.wav", seconds=1.0, subtype="FLOAT", peak=0.5)
    output = str(tmp_path / "out")
    run_unit([song, quiet], output, small_config(scratch))
    samples = read_samples(shard_files(output))
    hot = [s for s in samples if s.meta["song_id"] == "hot"]
    gain = hot[0].meta["gain"]
    assert {s.meta["gain"] for s in hot} == {gain}  # One gain for the whole song.
    assert len({s.meta["song_peak"] for s in hot}) == 1
    assert hot[0].meta["song_peak"] == pytest.approx(1.5, rel=1e-5)  # Before the gain.
    assert gain == pytest.approx(32767 / 32768 / 1.5, rel=1e-5)
    stored = song_audio(samples, "hot")
    pcm = np.rint(stored * 32768).astype(int)
    assert pcm.max() <= 32767 and pcm.min() >= -32767
    assert np.abs(pcm).max() >= 32766  # Scaled to just below full scale, not clipped flat.
    assert (np.abs(pcm) >= 32767).sum() < 10  # A clipped song would have long runs there.
    np.testing.assert_allclose(stored, source * gain, atol=2e-4)
    assert {(s.meta["gain"], s.meta["song_peak"] < 1) for s in samples if s not in hot} == {
        (1.0, True)
    }


LRC = (
    "\ufeff[ti:Song]\n[ar:Someone]\n[offset:+250]\n"
    "[00:02.75]third line <00:03.00>with <00:03.20>word tags\n"
    "[00:00.50][00:02.25]repeated line\n"
    "[00:01.25]second line\n"
    "[00:01.2]one decimal\n"
    "[00:00]start\n"
    "[01:00.000]past the end\n"
)


def test_lrc_lines_align_to_segments_relative_to_the_segment_start(corpus, tmp_path, scratch):
    song, _ = _song(corpus, "lrc.flac", seconds=3.5)
    with open(os.path.join(corpus, "lrc.lrc"), "w", encoding="utf-8") as handle:
        handle.write(LRC)
    song = SongSource(song.song_id, song.source, lyrics_source=os.path.join(corpus, "lrc.lrc"))
    output = str(tmp_path / "out")
    run_unit([song], output, small_config(scratch))
    samples = read_samples(shard_files(output))
    # With the +250 ms offset: start 0, repeated 0.25, one decimal 0.95, second 1.0,
    # repeated 2.0, third 2.5; "past the end" is in no segment.
    assert [s.meta["lyrics"] for s in samples] == [
        [{"t": 0.0, "text": "start"}, {"t": 0.25, "text": "repeated line"},
         {"t": 0.95, "text": "one decimal"}],
        [{"t": 0.0, "text": "second line"}],
        [{"t": 0.0, "text": "repeated line"}, {"t": 0.5, "text": "third line with word tags"}],
        [],
    ]  # fmt: skip
    assert [s.txt for s in samples] == [
        "start\nrepeated line\none decimal",
        "second line",
        "repeated line\nthird line with word tags",
        "",
    ]
    assert all(s.meta["lyrics_aligned"] for s in samples)


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("cp1252", "Café crème à l’été"), ("gb18030", "月亮代表我的心"), ("utf-16", "Grüße 你好")],
)
def test_lyrics_in_legacy_encodings_reach_the_shards_intact(
    corpus, tmp_path, scratch, encoding, text
):
    song, _ = _song(corpus, "enc.flac", seconds=1.0)
    lrc = os.path.join(corpus, "enc.lrc")
    with open(lrc, "wb") as handle:
        handle.write(f"[00:00.10]{text}\n".encode(encoding))
    output = str(tmp_path / "out")
    run_unit([SongSource("enc", song.source, lyrics_source=lrc)], output, small_config(scratch))
    (sample,) = read_samples(shard_files(output))
    assert sample.meta["lyrics"] == [{"t": 0.1, "text": text}]
    assert sample.txt == text


def test_plain_text_and_manifest_lyrics_attach_whole_and_unaligned(corpus, tmp_path, scratch):
    plain, _ = _song(corpus, "plain.flac", seconds=2.0)
    with open(os.path.join(corpus, "plain.txt"), "w") as handle:
        handle.write("A plain verse\nwith no timing\n")
    plain = SongSource("plain", plain.source, lyrics_source=os.path.join(corpus, "plain.txt"))
    inline, _ = _song(corpus, "inline.flac", seconds=2.0)
    inline = SongSource("inline", inline.source, lyrics_text="[00:01.50]inline lrc line",
                        title="Inline", artist="Band")  # fmt: skip
    inline_plain, _ = _song(corpus, "inline_plain.flac", seconds=1.0)
    inline_plain = SongSource("inline_plain", inline_plain.source, lyrics_text="just words")
    output = str(tmp_path / "out")
    run_unit([plain, inline, inline_plain], output, small_config(scratch))
    by_key = {s.key: s for s in read_samples(shard_files(output))}
    for key in ("plain_00000", "plain_00001"):
        assert by_key[key].meta["lyrics_aligned"] is False
        assert by_key[key].meta["lyrics"] == []
        assert by_key[key].txt == "A plain verse\nwith no timing"
    assert by_key["inline_00000"].meta["lyrics"] == []
    assert by_key["inline_00001"].meta["lyrics"] == [{"t": 0.5, "text": "inline lrc line"}]
    assert by_key["inline_00001"].meta["lyrics_aligned"] is True
    assert (by_key["inline_00001"].meta["title"], by_key["inline_00001"].meta["artist"]) == (
        "Inline", "Band",
    )  # fmt: skip
    assert "title" not in by_key["plain_00000"].meta
    assert by_key["inline_plain_00000"].txt == "just words"
    assert by_key["inline_plain_00000"].meta["lyrics_aligned"] is False


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def test_bad_inputs_become_rejects_with_reasons_and_the_unit_goes_on(corpus, tmp_path, scratch):
    import subprocess

    import soundfile as sf

    good, _ = _song(corpus, "good.flac", seconds=2.0)
    songs = {"good": good}
    songs["empty"] = SongSource("empty", _write(os.path.join(corpus, "empty.wav"), b""))
    songs["text"] = SongSource(
        "text", _write(os.path.join(corpus, "text.mp3"), b"not audio at all\n" * 50)
    )
    for name in ("cut.wav", "cut.flac"):
        path = os.path.join(corpus, name)
        write_song(path, seconds=3.0, rate=44_100)
        data = Path(path).read_bytes()
        songs[name.replace(".", "_")] = SongSource(
            name.replace(".", "_"), _write(path, data[: len(data) // 2])
        )
    m4a = os.path.join(corpus, "cut.m4a")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", good.source, m4a], check=True)
    data = Path(m4a).read_bytes()
    songs["cut_m4a"] = SongSource("cut_m4a", _write(m4a, data[: len(data) * 2 // 3]))
    low = os.path.join(corpus, "low.wav")
    sf.write(low, np.zeros((8000, 1), np.float32), 4_000)
    songs["low"] = SongSource("low", low)
    short, _ = _song(corpus, "short.flac", seconds=0.2)
    songs["short"] = SongSource("short", short.source)
    songs["missing"] = SongSource("missing", os.path.join(corpus, "missing.flac"))
    # Lyrics problems cost the lyrics, not the song.
    binary_lyrics, _ = _song(corpus, "binlyr.flac", seconds=1.0)
    songs["binlyr"] = SongSource("binlyr", binary_lyrics.source,
                                 lyrics_source=_write(os.path.join(corpus, "binlyr.lrc"),
                                                      bytes(range(256)) * 8))  # fmt: skip
    gone_lyrics, _ = _song(corpus, "gonelyr.flac", seconds=1.0)
    songs["gonelyr"] = SongSource("gonelyr", gone_lyrics.source,
                                  lyrics_source=os.path.join(corpus, "nowhere.lrc"))  # fmt: skip

    output = str(tmp_path / "out")
    result = run_unit(sorted(songs.values(), key=lambda s: s.song_id), output,
                      small_config(scratch, min_tail_seconds=0.5))  # fmt: skip
    reasons = {(r.song_id, r.stage): r.reason for r in result.rejects}
    expected = {
        ("empty", "decode"): "empty: the file has 0 bytes",
        ("text", "decode"): "corrupt or unsupported",
        ("cut_wav", "decode"): "truncated",
        ("cut_flac", "decode"): "corrupt",
        ("cut_m4a", "decode"): "",
        ("low", "decode"): "unsupported sample rate 4000 Hz",
        ("short", "segment"): "too short: 0.20 s gives no segment",
        ("missing", "decode"): "unreadable",
        ("binlyr", "lyrics"): "binary content",
        ("gonelyr", "lyrics"): "unreadable lyrics: FileNotFoundError",
    }
    assert set(reasons) == set(expected)
    for where, fragment in expected.items():
        assert fragment in reasons[where], (where, reasons[where])
    assert all(reasons.values())
    assert {r.path for r in result.rejects if r.song_id == "binlyr"} == {
        os.path.join(corpus, "binlyr.lrc")
    }
    assert (result.songs, result.songs_ok) == (len(songs), 3)
    keys = [s.key for s in read_samples(shard_files(output))]
    assert keys == ["binlyr_00000", "gonelyr_00000", "good_00000", "good_00001"]


def test_shards_roll_over_at_the_sample_limit(corpus, tmp_path, scratch):
    songs = [_song(corpus, f"s{i}.flac", seconds=2.0, seed=i)[0] for i in range(3)]
    output = str(tmp_path / "out")
    result = run_unit(songs, output, small_config(scratch, shard_limits=limits(max_samples=4)),
                      index=7)  # fmt: skip
    assert [(s.name, s.samples) for s in result.shards] == [
        ("000007-0000.tar", 4), ("000007-0001.tar", 2),
    ]  # fmt: skip
    assert [os.path.basename(p) for p in shard_files(output)] == [s.name for s in result.shards]
    for shard in result.shards:
        assert os.path.getsize(os.path.join(output, "shards", shard.name)) == shard.bytes
    assert len(read_samples(shard_files(output))) == 6


def test_shards_roll_over_at_the_byte_limit(corpus, tmp_path, scratch):
    songs = [_song(corpus, f"s{i}.flac", seconds=2.0, seed=i)[0] for i in range(2)]
    output = str(tmp_path / "out")
    probe = run_unit(songs[:1], str(tmp_path / "probe"), small_config(scratch))
    sample_bytes = probe.shards[0].bytes // 2  # Two samples of a similar size.
    config = small_config(scratch, shard_limits=limits(max_bytes=int(sample_bytes * 2.5)))
    result = run_unit(songs, output, config)
    assert [s.samples for s in result.shards] == [2, 2]
    assert all(s.bytes <= sample_bytes * 2.5 for s in result.shards)
    # A sample larger than the limit still gets written, one per shard.
    tiny = run_unit(songs, str(tmp_path / "tiny"), small_config(scratch,
                    shard_limits=limits(max_bytes=1000)))  # fmt: skip
    assert [s.samples for s in tiny.shards] == [1, 1, 1, 1]


def test_rerun_into_a_fresh_output_is_byte_identical(corpus, tmp_path, scratch):
    songs = [
        _song(corpus, "one.wav", seconds=2.4, rate=44_100)[0],
        _song(corpus, "two.flac", seconds=1.5, rate=22_050, channels=3)[0],
    ]
    config = small_config(scratch, shard_limits=limits(max_samples=2))
    first = run_unit(songs, str(tmp_path / "first"), config)
    second = run_unit(songs, str(tmp_path / "second"), config)
    assert first.shards == second.shards
    for shard in first.shards:
        paths = [str(tmp_path / run / "shards" / shard.name) for run in ("first", "second")]
        assert Path(paths[0]).read_bytes() == Path(paths[1]).read_bytes()


def test_tar_headers_are_deterministic(corpus, tmp_path, scratch):
    import tarfile

    song, _ = _song(corpus, "d.flac", seconds=1.0)
    output = str(tmp_path / "out")
    run_unit([song], output, small_config(scratch))
    with tarfile.open(shard_files(output)[0]) as archive:
        for member in archive.getmembers():
            assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
            assert (member.uname, member.gname) == ("", "")


def test_redoing_a_unit_replaces_its_shards_and_removes_stale_ones(corpus, tmp_path, scratch):
    songs = [_song(corpus, f"s{i}.flac", seconds=2.0, seed=i)[0] for i in range(2)]
    output = str(tmp_path / "out")
    run_unit(songs, output, small_config(scratch, shard_limits=limits(max_samples=1)))
    assert len(shard_files(output)) == 4
    result = run_unit(songs, output, small_config(scratch))
    assert [os.path.basename(p) for p in shard_files(output)] == ["000000-0000.tar"]
    assert [s.key for s in read_samples(shard_files(output))] == [
        "s0_00000", "s0_00001", "s1_00000", "s1_00001",
    ]  # fmt: skip
    assert result.shards[0].samples == 4


def test_long_song_ids_fit_in_the_tar_and_read_back(corpus, tmp_path, scratch):
    """Ids up to the schema's 120 characters; tar's classic name field holds only 100."""
    long_id = "a" * 120
    song, _ = _song(corpus, "long-name.flac", long_id, seconds=1.0)
    output = str(tmp_path / "out")
    result = run_unit([song], output, small_config(scratch))
    assert result.rejects == []
    names = [name for name, _ in tar_members(shard_files(output)[0])]
    assert names == [f"{long_id}_00000.{ext}" for ext in ("flac", "json", "txt")]
    (sample,) = read_samples(shard_files(output))
    assert sample.meta["key"] == f"{long_id}_00000"
    (row,) = wds.WebDataset(shard_files(output), shardshuffle=False)
    assert row["__key__"] == f"{long_id}_00000"


def test_webdataset_library_reads_the_shards_unchanged(corpus, tmp_path, scratch):
    import json

    import soundfile as sf

    songs = [_song(corpus, f"w{i}.flac", seconds=2.0, seed=i)[0] for i in range(2)]
    output = str(tmp_path / "out")
    run_unit(songs, output, small_config(scratch, shard_limits=limits(max_samples=3)))
    rows = list(wds.WebDataset(shard_files(output), shardshuffle=False))
    assert [row["__key__"] for row in rows] == ["w0_00000", "w0_00001", "w1_00000", "w1_00001"]
    for row in rows:
        assert set(row) >= {"__key__", "flac", "json", "txt"}
        metadata = json.loads(row["json"])
        assert metadata["key"] == row["__key__"]
        audio, rate = sf.read(io.BytesIO(row["flac"]))
        assert (rate, audio.shape) == (48_000, (48_000, 2))


def test_marker_with_another_fingerprint_is_not_trusted(corpus, tmp_path, scratch):
    song, _ = _song(corpus, "m.flac", seconds=1.0)
    other, _ = _song(corpus, "n.flac", seconds=1.0)
    output = str(tmp_path / "out")
    config = small_config(scratch)
    result = run_unit([song], output, config)
    assert load_marker(output, Unit(0, (song,)), config.storage) == result
    assert load_marker(output, Unit(0, (other,)), config.storage) is None
    assert load_marker(output, Unit(1, (song,)), config.storage) is None
    assert UnitResult.from_dict(result.to_dict()) == result


def test_shards_get_the_same_permissions_as_the_other_outputs(corpus, tmp_path, scratch):
    """Shards are staged in private scratch space, but must not stay private (0600)."""
    song, _ = _song(corpus, "p.flac", seconds=1.0)
    output = str(tmp_path / "out")
    run_unit([song], output, small_config(scratch))
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    assert os.stat(marker_path(output, 0)).st_mode & 0o777 == expected
    assert {os.stat(p).st_mode & 0o777 for p in shard_files(output)} == {expected}


def test_a_unit_whose_run_is_replaced_midway_publishes_nothing_more(corpus, tmp_path, scratch):
    songs = [_song(corpus, f"r{i}.flac", seconds=2.0, seed=i)[0] for i in range(2)]
    output = str(tmp_path / "out")
    fs, root = filesystem(output, StorageOptions())
    fence = claimed(output)

    def replace_the_run(event: str, song_id: str) -> None:
        if (event, song_id) == ("start", "r1"):
            assert len(shard_files(output)) == 1  # Published while the run held the output.
            claim_output(fs, root, TEST_RUN_FILE, {"claimed by": "another run"},
                         ("shards", "_prepare"), True, str)  # fmt: skip

    config = small_config(scratch, shard_limits=limits(max_samples=1))
    with pytest.raises(Superseded):
        prepare_unit(Unit(0, tuple(songs)), config, output, fence, on_song=replace_the_run)
    files = [p for p in Path(output).rglob("*") if p.is_file()]
    assert files == [Path(output, TEST_RUN_FILE)]  # No shard, marker or partial of the unit.
