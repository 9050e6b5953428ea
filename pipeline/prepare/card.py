"""Writes prepare's dataset card (`card.json`, `card.html`) from the run's own tables.

The card is rebuilt from `quality.parquet`'s kept song rows, the rejects and the duplicate
groups at the end of every run, so it always describes the output as it stands.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from pipeline.card.data import CardDuplicateGroup, CardInputs, CardSong, card_data
from pipeline.card.html import card_html
from pipeline.io import atomic_write, join, write_json
from pipeline.prepare.records import Reject
from schemas.quality import MEASURE_COLUMNS

CARD_JSON = "card.json"
CARD_HTML = "card.html"
UNITS = {
    "loudness_lufs": "LUFS",
    "true_peak_dbtp": "dBTP",
    "sample_peak_dbfs": "dBFS",
    "silence": "share of 100 ms frames",
    "digital_silence": "share of 100 ms frames",
    "bandwidth_hz": "Hz",
    "stereo_correlation": "correlation",
    "channel_balance_db": "dB (left / right)",
    "dc_offset": "full scale",
    "clipping": "share of samples",
}


def write_card(
    fs, root: str, title: str, quality: pa.Table, rejects: list[Reject], duplicates: pa.Table,
    fence: Callable[[], None],
) -> dict[str, Any]:  # fmt: skip
    """Writes `card.json` and `card.html` under `root`; returns the card's data."""
    card = card_data(card_inputs(title, quality, rejects, duplicates))
    write_json(fs, join(root, CARD_JSON), card, fence)
    with atomic_write(fs, join(root, CARD_HTML), fence) as handle:
        handle.write(card_html(card).encode("utf-8"))
    return card


def card_inputs(
    title: str, quality: pa.Table, rejects: list[Reject], duplicates: pa.Table
) -> CardInputs:
    """What the card shows, from the run's tables."""
    rows = quality.filter(quality.column("kept")).to_pylist()
    segments = Counter(row["song_id"] for row in rows if row["level"] == "segment")
    songs = tuple(
        CardSong(
            song_id=row["song_id"],
            artist=row["artist"] or "",
            split=row["split"] or "",
            hours=row["kept_seconds"] / 3600,
            segments=segments[row["song_id"]],
            measures={name: row[name] for name in MEASURE_COLUMNS},
        )
        for row in rows
        if row["level"] == "song"
    )
    members: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
    for row in duplicates.to_pylist():
        members[row["group"]].append((row["song_id"], row["source"], row["kept"]))
    groups = tuple(CardDuplicateGroup(n, tuple(m)) for n, m in sorted(members.items()))
    reasons = Counter(reject.rule or reject.stage for reject in rejects)
    return CardInputs(title, songs, dict(reasons), groups, dict(UNITS))
