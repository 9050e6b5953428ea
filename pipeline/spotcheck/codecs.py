"""The codecs a spot-check compares: where their token tables are, what made them, and how
to build a model that decodes them.

Tokenize writes one folder per codec under its output: `<tokens>/<codec>/tokens/part-*.parquet`
(and `<tokens>/<codec>/codebook_stats.json`), for the codecs of `audio_codecs.registry`. Every
row records its codec's provenance (`pipeline.tokenize.rows.PROVENANCE_COLUMNS`); a table's
first row stands for the table, since one tokenize run writes one codec configuration.

Each codec's plugin builds the model that decodes its codes from that record, the decoder
settings the user gave it (`--decoder-...` options of its own) and the checkpoint the user
names for it (`--checkpoint codec=PATH`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from audio_codecs import registry
from audio_codecs.base import Codec, RecordedCodec
from core.errors import InvalidSetting
from pipeline.io import StorageOptions, filesystem, join
from pipeline.parquet_files import read_parquet
from pipeline.tokenize.parts import token_files
from pipeline.tokenize.rows import PROVENANCE_COLUMNS, recorded_codec


@dataclass(frozen=True)
class TableCodec:
    """One codec's token tables, what they record of the codec, and how to decode them.

    Attributes:
        codec: The codec's registry name (its folder under the tokens).
        recorded: The codec that made the codes, as the tables record it.
        files: Its token table files.
        checkpoint: The checkpoint the user named for it (`--checkpoint`), if any.
        decoder: Its decoder settings (the plugin's `decoder_options`), plain values.
    """

    codec: str
    recorded: RecordedCodec
    files: tuple[str, ...]
    checkpoint: str | None = None
    decoder: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, object]:
        """What decides this codec's decoded files: recorded in the spot-check's claim."""
        made = {k: v for k, v in asdict(self.recorded).items() if k not in ("codec", "config")}
        return {**made, "checkpoint": self.checkpoint, "decoder": self.decoder}

    def to_dict(self) -> dict[str, Any]:
        """Plain values, to travel to the decoding actors."""
        return {**asdict(self), "files": list(self.files)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableCodec:
        """The inverse of `to_dict`."""
        recorded = RecordedCodec(**data["recorded"])
        files, decoder = tuple(data["files"]), dict(data["decoder"])
        return cls(data["codec"], recorded, files, data["checkpoint"], decoder)

    def decoding_codec(self, device: torch.device) -> Codec:
        """The model that decodes these codes, on `device` (its plugin builds it)."""
        plugin = registry.plugin(self.codec)
        return plugin.decoding_codec(self.recorded, self.decoder, self.checkpoint, device)


def find_codec_tables(
    tokens_url: str,
    storage: StorageOptions,
    checkpoints: dict[str, str] | None = None,
    decoders: dict[str, dict[str, Any]] | None = None,
) -> list[TableCodec]:
    """The codecs that have token tables under `tokens_url`, in registry order.

    Args:
        tokens_url: Tokenize's output: `<tokens_url>/<codec>/tokens/part-*.parquet`.
        storage: How to reach object stores.
        checkpoints: Codec name -> the checkpoint its tables were made from.
        decoders: Codec name -> its decoder settings (`CodecPlugin.decoder_options`).

    Raises:
        InvalidSetting: A checkpoint is named for a codec without tables, or a codec's
            tables cannot be decoded with what the user gave it (a checkpoint, a decoder).
    """
    checkpoints = checkpoints or {}
    decoders = decoders or {}
    found = []
    for name in registry.codecs():
        files = token_files(join(tokens_url, name, "tokens"), storage)
        if not files:
            continue
        fs, path = filesystem(files[0], storage)
        first = read_parquet(fs, path, list(PROVENANCE_COLUMNS)).slice(0, 1).to_pylist()
        if not first:
            continue
        table = TableCodec(
            codec=name,
            recorded=recorded_codec(first[0]),
            files=tuple(files),
            checkpoint=checkpoints.get(name),
            decoder=dict(decoders.get(name, {})),
        )
        # What cannot decode is a usage error before anything runs.
        registry.plugin(name).check_decoding(table.recorded, table.decoder, table.checkpoint)
        found.append(table)
    unknown = sorted(set(checkpoints) - {t.codec for t in found})
    if unknown:
        raise InvalidSetting(f"--checkpoint for {unknown}: no token tables of that codec")
    return found
