"""Hugging Face `datasets`: one dataset per split in the `save_to_disk` layout.

Typed features: ids, the segment's place in its song, the lyrics text, lyric lines as a
list of structs (`t`, `end`, `text` and, per codec, `first_frame_<codec>` /
`last_frame_<codec>`), and per codec `codes_<codec>`, a 2-D uint16 array `[frames,
channels * codebooks]`. Each part is written as Arrow files of its own (one per split,
under `_export/hf-parts/`); `finish` joins them, memory-mapped, into a
`datasets.DatasetDict` and saves it at `<output>/hf-datasets/`, where
`datasets.load_from_disk` reads it offline. The codecs' provenance is in the dataset's
description (JSON).
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.export.samples import ExportSample

PARTS_DIR = "_export/hf-parts"
DATA_DIR = "hf-datasets"
ROWS_PER_WRITE = 64  # Samples encoded at a time: bounds the memory of a part.


class HfDatasets:
    """`--format hf-datasets`."""

    name = "hf-datasets"
    library = "datasets"
    extra = "hf"
    carries_audio = False

    def write_part(
        self,
        samples: Iterable[ExportSample],
        directory: Path,
        index: int,
        codecs: dict[str, Any],
        audio: bool,
    ) -> int:
        """Part `index` as one Arrow file per split under `directory/_export/hf-parts/`."""
        from datasets import Dataset

        features = features_for(codecs)
        folder = directory / PARTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
        count = 0
        try:
            iterator = iter(samples)
            while chunk := list(itertools.islice(iterator, ROWS_PER_WRITE)):
                for split, group in itertools.groupby(chunk, key=lambda s: s.split):
                    rows = [row_of(sample) for sample in group]
                    table = Dataset.from_list(rows, features=features).data.table
                    if split not in writers:
                        path = folder / f"part-{index:06d}.{split}.arrow"
                        writers[split] = pa.ipc.new_stream(str(path), table.schema)
                    writers[split].write_table(table)
                    count += len(rows)
        finally:
            for writer in writers.values():
                writer.close()
        return count

    def finish(self, output: Path, parts: list[int], codecs: dict[str, Any]) -> None:
        """Every part's files joined (memory-mapped) into one dataset per split, saved at
        `output/hf-datasets/` in the `save_to_disk` layout (staged, then moved into place)."""
        from datasets import Dataset, DatasetDict, DatasetInfo, concatenate_datasets
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # The job's own bar is the progress; stderr stays a log.

        folder = output / PARTS_DIR
        files = sorted(folder.glob("part-*.arrow"))
        splits = sorted({f.name.split(".")[1] for f in files})
        info = DatasetInfo(
            description=json.dumps({"codecs": codecs}), features=features_for(codecs)
        )
        dataset = DatasetDict(
            {
                split: concatenate_datasets(
                    [
                        Dataset.from_file(str(f), info=info)
                        for f in files
                        if f.name.split(".")[1] == split
                    ]
                )
                for split in splits
            }
        )
        staged, final = output / "_export" / "hf-final", output / DATA_DIR
        shutil.rmtree(staged, ignore_errors=True)
        dataset.save_to_disk(str(staged))
        shutil.rmtree(final, ignore_errors=True)
        staged.replace(final)


def features_for(codecs: dict[str, Any]):
    """The typed features of an export of `codecs` (name -> provenance)."""
    from datasets import Array2D, Features, List, Value

    line = {"t": Value("float64"), "end": Value("float64"), "text": Value("string")}
    for codec in codecs:
        line[f"first_frame_{codec}"] = Value("int32")
        line[f"last_frame_{codec}"] = Value("int32")
    columns = {
        "key": Value("string"),
        "song_id": Value("string"),
        "segment_index": Value("int32"),
        "start_s": Value("float64"),
        "duration_s": Value("float64"),
        "source": Value("string"),
        "split": Value("string"),
        "lyrics_text": Value("string"),
        "lyrics": List(line),
    }
    for codec, info in codecs.items():
        rows = int(info["channels"]) * int(info["n_codebooks"])
        columns[f"codes_{codec}"] = Array2D(shape=(None, rows), dtype="uint16")
    return Features(columns)


def row_of(sample: ExportSample) -> dict[str, Any]:
    """One sample as a row of `features_for`."""
    lines = []
    for line in sample.lyrics:
        row = {"t": line["t"], "end": line["end"], "text": line["text"]}
        for codec, (first, last) in line["frames"].items():
            row[f"first_frame_{codec}"], row[f"last_frame_{codec}"] = first, last
        lines.append(row)
    return {
        "key": sample.key,
        "song_id": sample.song_id,
        "segment_index": sample.segment_index,
        "start_s": sample.start_s,
        "duration_s": sample.duration_s,
        "source": sample.source,
        "split": sample.split,
        "lyrics_text": sample.lyrics_text,
        "lyrics": lines,
        **{f"codes_{codec}": codes.codes for codec, codes in sample.codes.items()},
    }


FORMAT = HfDatasets()
