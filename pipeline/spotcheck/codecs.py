"""The codecs a spot-check compares: where their token tables are, what made them, and how
to build a model that decodes them.

Tokenize writes one folder per codec under its output: `<tokens>/<codec>/tokens/part-*.parquet`
(and `<tokens>/<codec>/codebook_stats.json`), for the codecs of `audio_codecs.registry`. Every
row records its codec's provenance (token schema: `tokenizer`, `codec_preset`, `codec_mode`,
`checkpoint_sha256`, ...); a table's first row stands for the table, since one tokenize run
writes one codec configuration.

Decoding models: MuCodec decodes with the spot-check's flow-matching decoder (`DecoderSpec`)
attached to a decode-only MuCodec codec; every other codec decodes with its own model,
rebuilt from the table's provenance (preset and seed of random weights) or from the
checkpoint the user names for it (`--checkpoint codec=PATH`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from audio_codecs import registry
from audio_codecs.base import PIPELINE_SAMPLE_RATE, Codec, CodecInfo, CodecSpec
from audio_codecs.mucodec import MuCodecCodec
from mucodec.encoder.config import TokenizerConfig
from mucodec.encoder.frontend import song_peak_divisor
from pipeline.errors import InvalidSetting
from pipeline.io import StorageOptions, filesystem, join, read_parquet
from pipeline.spotcheck.rows import DecodeRow
from pipeline.tokenize.dataset import token_files

# Per-codec columns that describe the codec rather than the segment.
PROVENANCE_COLUMNS = (
    "tokenizer", "tokenizer_config", "checkpoint_sha256", "codec_preset", "codec_mode",
    "bitrate_kbps", "token_rate",
)  # fmt: skip
RANDOM_WEIGHTS = "random-weights-seed-"


@dataclass(frozen=True)
class TableCodec:
    """One codec's token tables and the provenance its decoder is rebuilt from.

    Attributes:
        codec: The codec's name in the registry (the tables' `tokenizer`).
        files: Its token table files.
        preset: `codec_preset` ("" when made from a checkpoint's own config).
        mode: `codec_mode`, e.g. "encode" or DAC's "compress".
        config: `tokenizer_config`, the codec's config JSON.
        weights: `checkpoint_sha256`: a weights file's sha256 or "random-weights-seed-N".
        bitrate_kbps: The codes' nominal bitrate.
        frame_rate: Code frames per second (`token_rate`).
        checkpoint: The checkpoint the user named for this codec (`--checkpoint`), if any.
    """

    codec: str
    files: tuple[str, ...]
    preset: str
    mode: str
    config: str
    weights: str
    bitrate_kbps: float
    frame_rate: float
    checkpoint: str | None = None

    def identity(self) -> dict[str, object]:
        """What decides this codec's decoded files: recorded in the spot-check's claim."""
        return {k: v for k, v in asdict(self).items() if k not in ("files", "config")}

    def spec(self) -> CodecSpec:
        """How to rebuild the model these codes came from (not used for MuCodec).

        Raises:
            InvalidSetting: The tables were made from a checkpoint and none was named.
        """
        # Only the mode changes how codes decode (DAC compress). EnCodec's bandwidth does not:
        # its decoder sums the codebooks the codes have, whatever the model's default.
        options = () if self.mode in ("", "encode") else (("mode", self.mode),)
        if self.checkpoint is not None:
            return CodecSpec(self.codec, checkpoint=self.checkpoint, options=options)
        if self.weights.startswith(RANDOM_WEIGHTS):
            seed = int(self.weights.removeprefix(RANDOM_WEIGHTS))
            return CodecSpec(self.codec, preset=self.preset, seed=seed, options=options)
        raise InvalidSetting(
            f"the {self.codec} tokens were made from a checkpoint (weights sha256 "
            f"{self.weights[:12]}...): name it with --checkpoint {self.codec}=PATH"
        )


def find_codec_tables(
    tokens_url: str, storage: StorageOptions, checkpoints: dict[str, str] | None = None
) -> list[TableCodec]:
    """The codecs that have token tables under `tokens_url`, in registry order.

    Args:
        tokens_url: Tokenize's output: `<tokens_url>/<codec>/tokens/part-*.parquet`.
        storage: How to reach object stores.
        checkpoints: Codec name -> the checkpoint its tables were made from.

    Raises:
        InvalidSetting: A checkpoint is named for a codec without tables, or a table
            made from a checkpoint has none named.
    """
    checkpoints = checkpoints or {}
    found = []
    for name in registry.CODECS:
        files = token_files(join(tokens_url, name, "tokens"), storage)
        if not files:
            continue
        fs, path = filesystem(files[0], storage)
        first = read_parquet(fs, path, list(PROVENANCE_COLUMNS)).slice(0, 1).to_pylist()
        if not first:
            continue
        row = first[0]
        table = TableCodec(
            codec=name,
            files=tuple(files),
            preset=row["codec_preset"],
            mode=row["codec_mode"],
            config=row["tokenizer_config"],
            weights=row["checkpoint_sha256"],
            bitrate_kbps=float(row["bitrate_kbps"]),
            frame_rate=float(row["token_rate"]),
            checkpoint=checkpoints.get(name),
        )
        if name != "mucodec":
            table.spec()  # A missing checkpoint is a usage error before anything runs.
        found.append(table)
    unknown = sorted(set(checkpoints) - {t.codec for t in found})
    if unknown:
        raise InvalidSetting(f"--checkpoint for {unknown}: no token tables of that codec")
    return found


def as_the_codec_saw_it(row: DecodeRow, stored: torch.Tensor) -> torch.Tensor:
    """The segment the codec encoded: the stored `[2, L]` audio with prepare's gain undone,
    and for MuCodec also its official song-level normalisation (at 48 kHz, as decoded)."""
    reference = stored / float(row.gain)
    if row.codec == "mucodec":
        reference = reference / float(song_peak_divisor(row.song_peak))
    return reference


def load_decoding_codec(table: TableCodec, decoder, device: torch.device) -> Codec:
    """The model that decodes `table`'s codes on `device`.

    Args:
        table: The codec and its provenance.
        decoder: The `DecoderSpec` of MuCodec's flow-matching decoder (MuCodec only).
        device: Where the model runs.

    Raises:
        InvalidSetting: The named checkpoint is not the one the codes were made with.
    """
    if table.codec == "mucodec":
        config = TokenizerConfig.from_json(table.config)
        info = CodecInfo(
            codec="mucodec", preset=table.preset, config=table.config, weights_sha256=table.weights,
            sample_rate=PIPELINE_SAMPLE_RATE, frame_rate=table.frame_rate, channels=1,
            num_codebooks=config.quantizer.n_codebooks,
            codebook_size=config.quantizer.codebook_size,
        )  # fmt: skip
        model = decoder.load(config, device)
        sampling = model.with_sampling(num_steps=decoder.steps, guidance_scale=decoder.guidance)
        return MuCodecCodec(None, info).with_decoder(model, decoder.noise_seed, sampling)
    codec = registry.load_codec(table.spec(), device)
    if codec.info.weights_sha256 != table.weights:
        raise InvalidSetting(
            f"--checkpoint {table.codec}={table.checkpoint} has weights "
            f"{codec.info.weights_sha256[:12]}..., the tokens were made with "
            f"{table.weights[:12]}..."
        )
    return codec
