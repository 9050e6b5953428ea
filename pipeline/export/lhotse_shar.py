"""Lhotse Shar: one cut per segment, lyric lines as supervisions, codes as temporal arrays.

Each part becomes shard `n` of the Shar directory `<output>/lhotse-shar/`
(`cuts.<n>.jsonl.gz`, and per codec `codes_<codec>.<n>.tar`), so
`CutSet.from_shar(in_dir="<output>/lhotse-shar")` reads the whole export. A cut
has no recording (the codes are the data): its duration is the segment's (or its codes',
when a codec's last frame runs past it), its custom fields the song, the segment, the
source and the split, and each codec's codes are a
`TemporalArray` with that codec's frame shift (`cut.load_codes_<codec>()`, `[frames,
channels * codebooks]` uint16). A supervision's custom field `frames` gives each codec's
first and last frame of the line. With `--audio`, each cut also has its recording: the
segment's FLAC from prepare's shards, stored as it is (`cut.load_audio()`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.export.samples import ExportSample

DATA_DIR = "lhotse-shar"  # Under the output: Shar's directory holds nothing else.


class LhotseShar:
    """`--format lhotse-shar`."""

    name = "lhotse-shar"
    library = "lhotse"
    extra = "lhotse"
    carries_audio = True

    def write_part(
        self,
        samples: Iterable[ExportSample],
        directory: Path,
        index: int,
        codecs: dict[str, Any],
        audio: bool,
    ) -> int:
        """Shard `index` of the Shar layout, written under `directory/lhotse-shar/`."""
        from lhotse.shar import SharWriter

        shar = directory / DATA_DIR
        shar.mkdir(parents=True, exist_ok=True)
        fields = {f"codes_{codec}": "numpy" for codec in codecs}
        if audio:
            fields["recording"] = "original"  # prepare's FLAC, as stored: no re-encoding.
        count = 0
        # One shard per part, numbered by the part: the shard size never rolls over.
        with SharWriter(str(shar), fields, shard_size=1 << 40, shard_offset=index) as out:
            for sample in samples:
                out.write(cut_of(sample))
                count += 1
        return count

    def finish(self, output: Path, parts: list[int], codecs: dict[str, Any]) -> None:
        """Nothing to join: the parts are the shards."""


def cut_of(sample: ExportSample):
    """The Lhotse cut of one sample, its codes attached in memory."""
    from lhotse import MonoCut, MultiCut, Recording, SupervisionSegment

    supervisions = [
        SupervisionSegment(
            id=f"{sample.key}-{i}", recording_id=sample.key, start=line["t"],
            duration=line["end"] - line["t"], text=line["text"],
            custom={"frames": line["frames"]},
        )
        for i, line in enumerate(sample.lyrics)
    ]  # fmt: skip
    # Lhotse keeps the frames a cut's duration covers: a codec whose last frame runs past the
    # segment's end (DAC's, whose frames do not divide 35.84 s) lengthens the cut by it.
    duration = max(
        [sample.duration_s, *(c.codes.shape[0] / c.frame_rate for c in sample.codes.values())]
    )
    # With audio, a cut of both channels of the stereo segment; without, one code stream.
    kind, channel = (MultiCut, [0, 1]) if sample.flac else (MonoCut, 0)
    cut = kind(
        id=sample.key, start=0.0, duration=duration, channel=channel,
        supervisions=supervisions,
        recording=Recording.from_bytes(sample.flac, sample.key) if sample.flac else None,
        custom={"song_id": sample.song_id, "segment_index": sample.segment_index,
                "start_s": sample.start_s, "segment_duration_s": sample.duration_s,
                "source": sample.source, "split": sample.split,
                "lyrics_text": sample.lyrics_text},
    )  # fmt: skip
    for codec, codes in sample.codes.items():
        cut = cut.attach_tensor(
            f"codes_{codec}", codes.codes, frame_shift=1 / codes.frame_rate, temporal_dim=0
        )
    return cut


FORMAT = LhotseShar()
