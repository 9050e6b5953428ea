"""Near-duplicates: one recording under other encodings, rates and trims is one group.

Three distinct synthetic songs are written as WAV and copied with the ffmpeg CLI (mp3 at 128
and 64 kbit/s, FLAC resampled to 32 kHz, aac in m4a, 3 s cut from the start, 5 s from the
end), decoded back to float blocks and fingerprinted as the prepare stage does. Every copy
must join its original, distinct songs never; hand-made prints test the index's guards
(offsets, shared silence, overlap, frequent keys) without audio.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.quality import duplicates
from pipeline.quality.chromaprint import ITEM_SECONDS, fingerprint_blocks
from pipeline.quality.duplicates import (
    MATCH_THRESHOLD,
    MAX_KEY_SONGS,
    Candidate,
    Match,
    SongPrint,
    find_matches,
    group_songs,
    is_lossless,
    keep_best,
    rank_key,
)
from testing.synth import synth_song

# One worker builds the copies once for the whole module.
pytestmark = pytest.mark.xdist_group("quality_duplicates")
RATE = 44_100
SONGS = {"a": (21.0, 11), "b": (23.0, 12), "c": (25.0, 13)}  # name: (seconds, seed)
# Copy name: (file suffix, ffmpeg arguments placed before/after the input).
COPIES = {
    "mp3_128": (".mp3", [], ["-b:a", "128k"]),
    "mp3_64": (".mp3", [], ["-b:a", "64k"]),
    "flac_32k": (".flac", [], ["-ar", "32000"]),
    "aac": (".m4a", [], ["-c:a", "aac", "-b:a", "128k"]),
    "trim_start": (".wav", ["-ss", "3"], []),
    "trim_end": (".wav", [], ["-t", "{end}"]),
}


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Float32 `[frames, channels]` and its rate: libsndfile for wav/flac, ffmpeg otherwise."""
    if path.suffix in (".wav", ".flac", ".ogg"):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        return audio, rate
    probe = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-of", "csv=p=0",
             "-show_entries", "stream=sample_rate,channels", str(path)]  # fmt: skip
    rate, channels = map(int, subprocess.run(probe, capture_output=True, text=True,
                                             check=True).stdout.split(","))  # fmt: skip
    decode = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-"]
    raw = subprocess.run(decode, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels), rate


def _print(path: Path) -> np.ndarray:
    audio, rate = _decode(path)
    return fingerprint_blocks(np.array_split(audio, 7), rate, audio.shape[1])


@pytest.fixture(scope="module")
def prints(tmp_path_factory) -> dict[str, SongPrint]:
    """Song id ("<song>-<copy>", originals "<song>-orig") -> its print."""
    root = tmp_path_factory.mktemp("near_duplicates")
    encodes = []
    for name, (seconds, seed) in SONGS.items():
        original = root / f"{name}-orig.wav"
        sf.write(original, synth_song(seconds, RATE, 2, seed), RATE, subtype="PCM_16")
        for copy, (suffix, before, after) in COPIES.items():
            after = [arg.format(end=seconds - 5) for arg in after]
            command = ["ffmpeg", "-nostdin", "-v", "error", "-y", *before, "-i", str(original),
                       *after, str(root / f"{name}-{copy}{suffix}")]  # fmt: skip
            encodes.append(subprocess.Popen(command))
    assert all(process.wait() == 0 for process in encodes)
    return {
        path.stem: SongPrint(path.stem, _print(path))
        for path in sorted(root.iterdir())
        if path.stem.split("-")[0] in SONGS
    }


@pytest.fixture(scope="module")
def matches(prints: dict[str, SongPrint]) -> list[Match]:
    return find_matches(list(prints.values()))


def _song(song_id: str) -> str:
    return song_id.split("-")[0]


def _best_bit_error_rate(first: np.ndarray, second: np.ndarray, max_offset: int = 125) -> float:
    """Test oracle: the lowest bit error rate over every offset with 10 s of overlap."""
    rates = []
    for offset in range(-max_offset, max_offset + 1):
        x, y = first[max(offset, 0) :], second[max(-offset, 0) :]
        length = min(len(x), len(y))
        if length >= 81:
            rates.append(np.bitwise_count(x[:length] ^ y[:length]).sum() / (32 * length))
    return float(min(rates))


def test_every_copy_is_grouped_with_its_original_and_distinct_songs_never(
    prints: dict[str, SongPrint], matches: list[Match]
) -> None:
    groups = group_songs(matches)
    expected = [tuple(sorted(i for i in prints if _song(i) == song)) for song in SONGS]
    assert groups == expected
    assert len(expected[0]) == 1 + len(COPIES)
    assert all(_song(m.first) == _song(m.second) for m in matches)
    assert matches == sorted(matches, key=lambda m: (m.first, m.second))
    assert all(m.first < m.second for m in matches)


def test_copies_and_distinct_songs_lie_far_apart_from_the_threshold(
    prints: dict[str, SongPrint], matches: list[Match]
) -> None:
    copies = [m.bit_error_rate for m in matches]
    originals = [prints[f"{song}-orig"].fingerprint for song in SONGS]
    distinct = [_best_bit_error_rate(x, y) for i, x in enumerate(originals)
                for y in originals[i + 1 :]]  # fmt: skip
    print(f"bit error rates: copies {min(copies):.4f}-{max(copies):.4f}, "
          f"distinct songs {min(distinct):.4f}-{max(distinct):.4f}")  # fmt: skip
    assert max(copies) < MATCH_THRESHOLD / 2
    assert min(distinct) > MATCH_THRESHOLD * 1.25


def test_the_offset_of_a_start_trimmed_copy_is_its_trim(matches: list[Match]) -> None:
    trims = [m for m in matches if m.second.endswith("trim_start") and m.first.endswith("orig")]
    trims += [m for m in matches if m.first.endswith("trim_start") and m.second.endswith("orig")]
    assert len(trims) == len(SONGS)
    for match in trims:
        sign = 1 if match.second.endswith("trim_start") else -1
        assert sign * match.offset_s == pytest.approx(3.0, abs=ITEM_SECONDS)
    end_trims = [m for m in matches if "trim_end" in (m.first + m.second) and "orig" in
                 (m.first + m.second)]  # fmt: skip
    assert [m.offset_s for m in end_trims] == [0.0] * len(SONGS)


def test_a_catalog_is_checked_against_an_earlier_one(prints: dict[str, SongPrint]) -> None:
    # The earlier catalog holds the originals and, unnoticed then, a copy of "a".
    earlier = [prints[f"{song}-orig"] for song in SONGS] + [prints["a-mp3_64"]]
    current = [prints["b-aac"], prints["c-trim_start"]]
    found = find_matches(current, earlier)
    assert [(m.first, m.second) for m in found] == [("b-aac", "b-orig"), ("c-orig", "c-trim_start")]
    assert group_songs(found) == [("b-aac", "b-orig"), ("c-orig", "c-trim_start")]
    # Pairs within the earlier catalog are never searched; a new copy of "a" joins both.
    found = find_matches([prints["a-mp3_128"]], earlier)
    assert group_songs(found) == [("a-mp3_128", "a-mp3_64", "a-orig")]
    assert find_matches([], earlier) == []


def test_a_current_print_replaces_an_earlier_one_of_the_same_id(
    prints: dict[str, SongPrint],
) -> None:
    found = find_matches([prints["a-orig"], prints["a-aac"]], [prints["a-orig"]])
    assert [(m.first, m.second) for m in found] == [("a-aac", "a-orig")]
    with pytest.raises(ValueError, match="repeat"):
        find_matches([prints["a-orig"], prints["a-orig"]])


def test_short_audio_has_no_print_and_no_match(prints: dict[str, SongPrint]) -> None:
    audio = synth_song(2.5, RATE, 2, SONGS["a"][1])
    tiny = fingerprint_blocks([audio], RATE, 2)
    assert len(tiny) == 0
    assert find_matches([SongPrint("tiny", tiny), prints["a-orig"]]) == []


def test_an_excerpt_shorter_than_the_minimum_overlap_does_not_match(
    prints: dict[str, SongPrint],
) -> None:
    full = prints["a-orig"].fingerprint
    assert find_matches([SongPrint("excerpt", full[:70]), prints["a-orig"]]) == []
    assert len(find_matches([SongPrint("longer", full[:120]), prints["a-orig"]])) == 1


# --- Hand-made prints: the index's guards without audio ---


def _random_print(rng: np.random.Generator, items: int) -> np.ndarray:
    return rng.integers(0, 2**32, size=items, dtype=np.uint32)


def _noisy(rng: np.random.Generator, items: np.ndarray, bit_rate: float) -> np.ndarray:
    flips = rng.random((len(items), 32)) < bit_rate
    bits = flips * (np.uint64(1) << np.arange(32, dtype=np.uint64))
    return items ^ bits.sum(axis=1).astype(np.uint32)


def test_offsets_beyond_the_trim_allowance_are_not_searched() -> None:
    rng = np.random.default_rng(1)
    base = _random_print(rng, 600)
    near = SongPrint("near", _noisy(rng, base[100:], 0.03))  # 12.4 s trimmed.
    far = SongPrint("far", _noisy(rng, base[200:], 0.03))  # 24.8 s trimmed.
    found = find_matches([SongPrint("base", base), near, far])
    assert [(m.first, m.second, round(m.offset_s / ITEM_SECONDS)) for m in found] == [
        ("base", "near", 100),
        ("far", "near", -100),
    ]


def test_shared_silence_does_not_make_two_songs_one() -> None:
    # A common 6 s intro, 25 s of silence (one constant item), then different music:
    # counted whole, the silence would pull the bit error rate below the threshold.
    rng = np.random.default_rng(2)
    intro, silence = _random_print(rng, 48), np.full(200, 627964279, dtype=np.uint32)
    one = np.concatenate([intro, silence, _random_print(rng, 100)])
    two = np.concatenate([intro, silence, _random_print(rng, 100)])
    whole = np.bitwise_count(one ^ two).sum() / (32 * len(one))
    assert whole < MATCH_THRESHOLD
    assert find_matches([SongPrint("one", one), SongPrint("two", two)]) == []


def test_keys_in_too_many_songs_are_skipped_without_losing_copies(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    jingle = _random_print(rng, 100)  # A station jingle opening every song.
    songs = [np.concatenate([jingle, _random_print(rng, 300)]) for _ in range(MAX_KEY_SONGS + 1)]
    catalog = [SongPrint(f"song{i:02d}", items) for i, items in enumerate(songs)]
    catalog.append(SongPrint("song00-copy", _noisy(rng, songs[0], 0.03)))
    verified = []
    verify = duplicates._verify
    monkeypatch.setattr(duplicates, "_verify", lambda *args: verified.append(1) or verify(*args))
    assert group_songs(find_matches(catalog)) == [("song00", "song00-copy")]
    assert len(verified) == 1  # Not each of the 2,145 pairs that share the jingle.


def test_groups_are_connected_components_in_a_fixed_order() -> None:
    def match(a: str, b: str) -> Match:
        return Match(a, b, 0.0, 0.01)

    matches = [match("x", "y"), match("b", "c"), match("c", "d"), match("a", "e")]
    assert group_songs(matches) == [("a", "e"), ("b", "c", "d"), ("x", "y")]
    assert group_songs(matches[::-1]) == group_songs(matches)
    assert group_songs([]) == []


# --- The keep-best rule ---

LOSSLESS = ["pcm_s16le", "pcm_s24le", "pcm_f32le", "pcm_s16be", "flac", "alac", "wavpack",
            "ape", "tta", "WAV/PCM_16", "FLAC/PCM_24", "AIFF/PCM_S8", "WAV/FLOAT",
            "CAF/ALAC_16", "wav", "aiff"]  # fmt: skip
LOSSY = ["mp3", "aac", "vorbis", "opus", "wmav2", "pcm_mulaw", "pcm_alaw", "adpcm_ms",
         "OGG/VORBIS", "OGG/OPUS", "MP3/MPEG_LAYER_III", "WAV/ULAW", "WAV/IMA_ADPCM",
         "unknown", ""]  # fmt: skip


@pytest.mark.parametrize(("codec", "lossless"), [(c, True) for c in LOSSLESS]
                         + [(c, False) for c in LOSSY])  # fmt: skip
def test_is_lossless(codec: str, lossless: bool) -> None:
    assert is_lossless(codec) is lossless


def test_keep_best_prefers_lossless_then_bandwidth_then_length_then_id() -> None:
    wav = Candidate("z-wav", "pcm_s16le", 15_000.0, 40.0)
    mp3 = Candidate("a-mp3", "mp3", 19_000.0, 41.0)
    assert keep_best([mp3, wav]) == "z-wav"
    narrow = Candidate("a-narrow", "aac", 15_000.0, 41.0)
    assert keep_best([narrow, mp3]) == "a-mp3"
    # 16.1 and 16.3 kHz lie in one 500 Hz step: the length decides, also in 0.5 s steps.
    shorter = Candidate("a-short", "aac", 16_300.0, 38.0)
    longer = Candidate("b-long", "aac", 16_100.0, 40.0)
    assert keep_best([shorter, longer]) == "b-long"
    same = Candidate("c-same", "aac", 16_200.0, 40.2)
    assert keep_best([same, longer]) == "b-long"
    everything = [wav, mp3, narrow, shorter, longer, same]
    for seed in range(5):
        random.Random(seed).shuffle(everything)
        assert keep_best(everything) == "z-wav"
        assert sorted(everything, key=rank_key)[1:] == [mp3, longer, same, shorter, narrow]
    with pytest.raises(ValueError):
        keep_best([])
