"""Near-duplicate songs: one recording under several encodings, rates or trims, kept once.

Exact byte copies are caught by sha256 (`pipeline.prepare.fingerprint`); this module finds
the same recording re-encoded (mp3, aac, ogg at any bit rate), resampled, or trimmed by a
few seconds at either end, from the raw chromaprint of each song's first two minutes
(`pipeline.quality.chromaprint`), so a model never trains on one recording twice.

Matching, without comparing every pair of songs:
1. Index. Every item of every print goes into one inverted index keyed on the item with its
   KEY_DROP_BITS lowest bits (the last two classifiers) cleared, holding (song, position):
   an item survives a lossy re-encode whole only some of the time, and fewer bits to agree
   on find more of them, while 2^28 keys keep even a large catalog's index sparse. Only the
   first item of a run of equal items is indexed: a held chord or silence would otherwise
   pair each of its positions with each of another song's. Keys found in more than
   MAX_KEY_SONGS songs are skipped: silence and constant frames make the same items in
   every song and identify nothing.
2. Vote. Two songs that share a key at positions i and j vote for the offset i - j; only
   offsets within MAX_OFFSET_S (trims of up to 15 s) count. A pair with MIN_VOTES votes
   on its best offset (its two neighbours included: a trim that is not a whole number of
   items splits the votes) is a candidate.
3. Verify. The candidate's bit error rate, the fraction of differing bits between the
   aligned items, is measured at the voted offset and its neighbours; the lowest counts.
   Positions where both prints sit in the same run of a constant item (shared silence)
   are left out, and the rest must span MIN_OVERLAP_S, so a short common intro or two
   silent tracks never match. At or below MATCH_THRESHOLD the two are one recording.

MATCH_THRESHOLD = 0.2. Chromaprint's items are 32 bits of 16 two-bit classifiers; bits of
unrelated audio differ about half the time, and even at the best of all ~240 offsets within
15 s, distinct synthetic songs (one generator, one tempo, one drum pattern) differ in 0.32
or more of their bits. Copies measure 0.00-0.04 in the tests (mp3 at 64 and 128 kbit/s,
aac, 32 kHz FLAC, trims of 3 s and 5 s, the frame misalignment of a trim included), and no
more than 0.05 for opus at 24 kbit/s, vorbis at q0 or 32 kbit/s mono mp3. 0.2 leaves room
for noisier real encodes above those and a wide margin below distinct songs: a false match
drops a song, a missed one only keeps a copy.

Cost: building the index sorts all indexed items, O(T log T) for T items (about 950 per
two-minute print); the votes cost the sum over kept keys of their occurrences squared,
bounded by MAX_KEY_SONGS and small for distinct music, and the pairs are made VOTE_CHUNK at
a time so they never sit in memory at once; each candidate is verified in O(items). 10,000
prints take about 4 s on one core.

The keep-best rule picks one song of each group (`rank_key`): lossless sources first, then
the widest measured bandwidth (in BANDWIDTH_STEP_HZ steps, so measurement noise does not
decide), then the longest (DURATION_STEP_S steps), then the smallest song id, so the choice
never depends on input order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.quality.chromaprint import ITEM_SECONDS

MATCH_THRESHOLD = 0.2  # Bit error rate; calibrated in the module docstring.
KEY_DROP_BITS = 4
MAX_KEY_SONGS = 64  # Bounds one key's pairs to about 2,000: the votes' cost.
MAX_OFFSET_S = 15.0
MIN_OVERLAP_S = 10.0
MIN_VOTES = 3  # A key or two in common is chance; a copy shares dozens even over 10 s.
VOTE_CHUNK = 1 << 22  # Pairs made at once: ~200 MB of index arrays at most.
BANDWIDTH_STEP_HZ = 500.0
DURATION_STEP_S = 0.5

_MAX_OFFSET = math.ceil(MAX_OFFSET_S / ITEM_SECONDS)
_MIN_OVERLAP = math.ceil(MIN_OVERLAP_S / ITEM_SECONDS)
_WIDTH = 2 * _MAX_OFFSET + 1  # Offsets -_MAX_OFFSET.._MAX_OFFSET.
_KEY_MASK = np.uint32((0xFFFFFFFF << KEY_DROP_BITS) & 0xFFFFFFFF)

# ffprobe codec names that keep every sample, and the families by prefix; the wav/aiff
# family's names stand for their PCM. Companded "pcm" (mu-law, A-law) loses precision.
_LOSSLESS_CODECS = frozenset(
    {"flac", "alac", "wavpack", "ape", "tta", "tak", "shorten", "mlp", "truehd", "mp4als",
     "wmalossless", "s302m", "wav", "wave", "aiff", "aif", "aifc", "w64", "rf64"}
)  # fmt: skip
_LOSSLESS_PREFIXES = ("pcm_", "dsd_")
_LOSSY_PCM = frozenset({"pcm_mulaw", "pcm_alaw", "pcm_vidc"})
# libsndfile's subtypes ("WAV/PCM_16", "CAF/ALAC_24", "AIFF/DWVW_12" ...) that keep every
# sample; ULAW, ALAW, the ADPCMs, GSM610, VORBIS, OPUS and MPEG_LAYER_III do not.
_LOSSLESS_SUBTYPES = frozenset({"float", "double"})
_LOSSLESS_SUBTYPE_PREFIXES = ("pcm_", "alac_", "dwvw_", "dpcm_")


@dataclass(frozen=True)
class SongPrint:
    """One song's raw chromaprint (uint32 items; may be empty for very short audio)."""

    song_id: str
    fingerprint: np.ndarray


@dataclass(frozen=True)
class Match:
    """Two songs found to be one recording; `first < second`.

    `second`'s audio at time t is `first`'s at t + offset_s: positive when `second` lacks
    the first offset_s seconds of `first`.
    """

    first: str
    second: str
    offset_s: float
    bit_error_rate: float


@dataclass(frozen=True)
class Candidate:
    """What the keep-best rule weighs about one song of a duplicate group.

    `codec` is the source codec as the decoder recorded it: an ffprobe codec name ("flac",
    "mp3", "aac", "pcm_s16le") or libsndfile's "FORMAT/SUBTYPE" ("WAV/PCM_16", "OGG/VORBIS").
    """

    song_id: str
    codec: str
    bandwidth_hz: float
    duration_s: float


def find_matches(prints: Sequence[SongPrint], earlier: Sequence[SongPrint] = ()) -> list[Match]:
    """Pairs of songs that are one recording, sorted by (first, second).

    Args:
        prints: This run's songs; pairs among them are searched.
        earlier: An earlier run's catalog; pairs between it and `prints` are searched, never
            within it. An earlier print whose song id is also in `prints` is dropped (the
            song was prepared again).

    Raises:
        ValueError: if a song id repeats within `prints` or within `earlier`.
    """
    current_ids = {song.song_id for song in prints}
    _check_unique(prints, "prints")
    _check_unique(earlier, "earlier")
    songs = sorted(
        [(song, True) for song in prints]
        + [(song, False) for song in earlier if song.song_id not in current_ids],
        key=lambda entry: entry[0].song_id,
    )  # Indices follow id order, so the lower index is always `first`.
    fingerprints = [np.asarray(song.fingerprint, dtype=np.uint32) for song, _ in songs]
    is_current = np.array([current for _, current in songs], dtype=bool)
    matches = []
    for a, b, offset in _candidates(fingerprints, is_current):
        verified = _verify(fingerprints[a], fingerprints[b], offset)
        if verified is not None and verified[1] <= MATCH_THRESHOLD:
            best_offset, ber = verified
            matches.append(
                Match(songs[a][0].song_id, songs[b][0].song_id, best_offset * ITEM_SECONDS, ber)
            )
    return sorted(matches, key=lambda match: (match.first, match.second))


def _check_unique(prints: Sequence[SongPrint], name: str) -> None:
    ids = [song.song_id for song in prints]
    if len(set(ids)) != len(ids):
        raise ValueError(f"song ids repeat in {name}")


def _index(fingerprints: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key, song, position) of every indexed item, sorted by key, then song and position."""
    empty = np.zeros(0, dtype=np.int64)
    keys, song, position = [empty.astype(np.uint32)], [empty], [empty]
    for index, items in enumerate(fingerprints):
        starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]]) if len(items) else empty
        keys.append(items[starts] & _KEY_MASK)
        song.append(np.full(len(starts), index, dtype=np.int64))
        position.append(starts)
    keys_all, song_all, position_all = (np.concatenate(x) for x in (keys, song, position))
    order = np.argsort(keys_all, kind="stable")  # Built in song, position order: kept.
    return keys_all[order], song_all[order], position_all[order]


def _candidates(fingerprints: list[np.ndarray], is_current: np.ndarray) -> list[tuple]:
    """(song a, song b, offset) with a < b for every pair with MIN_VOTES on its best offset."""
    keys, song, position = _index(fingerprints)
    if len(keys) == 0:
        return []
    group_start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    group_end = np.r_[group_start[1:], len(keys)]
    first_of_song = np.r_[True, (keys[1:] != keys[:-1]) | (song[1:] != song[:-1])]
    songs_per_key = np.add.reduceat(first_of_song.astype(np.int64), group_start)
    current_per_key = np.add.reduceat((first_of_song & is_current[song]).astype(np.int64),
                                      group_start)  # fmt: skip
    keep = (songs_per_key >= 2) & (songs_per_key <= MAX_KEY_SONGS) & (current_per_key >= 1)
    # Each entry of a kept key pairs with the entries after it: (g - 1) + ... + 1 pairs.
    group = np.repeat(np.arange(len(group_start)), group_end - group_start)
    entry = np.flatnonzero(keep[group])
    later = group_end[group[entry]] - entry - 1
    codes = [np.zeros(0, dtype=np.int64)]
    for first, second in _entry_pairs(entry, later):
        a, b = song[first], song[second]
        offset = position[first] - position[second]
        useful = (a != b) & (is_current[a] | is_current[b]) & (np.abs(offset) <= _MAX_OFFSET)
        pair = a[useful] * len(fingerprints) + b[useful]
        codes.append(pair * _WIDTH + offset[useful] + _MAX_OFFSET)
    code, votes = np.unique(np.concatenate(codes), return_counts=True)
    return _best_offsets(code, votes, len(fingerprints)) if len(code) else []


def _entry_pairs(entry: np.ndarray, later: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(first, second) index arrays: each entry with the `later` entries after it, about
    VOTE_CHUNK pairs at a time."""
    chunk_ends = np.searchsorted(np.cumsum(later), np.arange(VOTE_CHUNK, later.sum(), VOTE_CHUNK))
    for chunk in np.split(np.arange(len(entry)), chunk_ends):
        counts = later[chunk]
        first = np.repeat(entry[chunk], counts)
        rank = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
        yield first, first + 1 + rank


def _best_offsets(code: np.ndarray, votes: np.ndarray, songs: int) -> list[tuple]:
    """Each pair's offset with the most votes, its neighbours' included (a trim that is not a
    whole number of items splits its votes over two offsets); ties go to the smaller offset."""
    pair, offset = np.divmod(code, _WIDTH)
    smoothed = votes.copy()
    for shift in (-1, 1):
        at = np.minimum(np.searchsorted(code, code + shift), len(code) - 1)
        inside = (offset + shift >= 0) & (offset + shift < _WIDTH)
        found = inside & (code[at] == code + shift)
        smoothed[found] += votes[at[found]]
    order = np.lexsort((offset, -smoothed, pair))
    best = order[np.r_[True, pair[order][1:] != pair[order][:-1]]]
    best = best[smoothed[best] >= MIN_VOTES]
    a, b = np.divmod(pair[best], songs)
    return list(zip(a.tolist(), b.tolist(), (offset[best] - _MAX_OFFSET).tolist(), strict=True))


def _verify(first: np.ndarray, second: np.ndarray, offset: int) -> tuple[int, float] | None:
    """(offset, bit error rate) at the best of `offset` and its neighbours; None if no
    overlap of MIN_OVERLAP_S remains."""
    best = None
    for candidate in (offset, offset - 1, offset + 1):
        ber = _bit_error_rate(first, second, candidate)
        if ber is not None and (best is None or ber < best[1]):
            best = (candidate, ber)
    return best


def _bit_error_rate(first: np.ndarray, second: np.ndarray, offset: int) -> float | None:
    """Differing bits over the informative overlap when second[t] aligns with first[t + offset]."""
    x = first[max(offset, 0) :]
    y = second[max(-offset, 0) :]
    length = min(len(x), len(y))
    x, y = x[:length], y[:length]
    # Shared runs of one constant item (silence, a held frame) say nothing about identity.
    repeated = np.r_[False, (x[1:] == x[:-1]) & (y[1:] == y[:-1])] & (x == y)
    x, y = x[~repeated], y[~repeated]
    if len(x) < _MIN_OVERLAP:
        return None
    return float(np.bitwise_count(x ^ y).sum()) / (32 * len(x))


def group_songs(matches: Sequence[Match]) -> list[tuple[str, ...]]:
    """Connected components of the matches: each sorted, sorted by first member, size >= 2."""
    parent: dict[str, str] = {}

    def root(song: str) -> str:
        parent.setdefault(song, song)
        while parent[song] != song:
            parent[song] = parent[parent[song]]  # Path halving keeps the trees flat.
            song = parent[song]
        return song

    for match in matches:
        a, b = root(match.first), root(match.second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for song in parent:
        groups.setdefault(root(song), []).append(song)
    return sorted(tuple(sorted(members)) for members in groups.values() if len(members) >= 2)


def is_lossless(codec: str) -> bool:
    """Whether the source codec keeps every sample; unknown codecs count as lossy."""
    name = codec.strip().lower()
    if "/" in name:  # libsndfile's "FORMAT/SUBTYPE": the subtype is the codec.
        subtype = name.rpartition("/")[2]
        return subtype in _LOSSLESS_SUBTYPES or subtype.startswith(_LOSSLESS_SUBTYPE_PREFIXES)
    if name in _LOSSY_PCM:
        return False
    return name in _LOSSLESS_CODECS or name.startswith(_LOSSLESS_PREFIXES)


def rank_key(candidate: Candidate) -> tuple:
    """Sort key of the keep-best rule: the smallest key is the song to keep.

    Lossless first, then the widest bandwidth in BANDWIDTH_STEP_HZ steps, then the longest
    in DURATION_STEP_S steps, then the smallest song id (a total order: no ties remain).
    """
    return (
        not is_lossless(candidate.codec),
        -math.floor(candidate.bandwidth_hz / BANDWIDTH_STEP_HZ),
        -math.floor(candidate.duration_s / DURATION_STEP_S),
        candidate.song_id,
    )


def keep_best(candidates: Sequence[Candidate]) -> str:
    """The song id to keep of one duplicate group (see `rank_key`).

    Raises:
        ValueError: if `candidates` is empty.
    """
    if not candidates:
        raise ValueError("keep_best needs at least one candidate")
    return min(candidates, key=rank_key).song_id
