"""MuCodecTokenizer: 48 kHz stereo audio -> MuCodec tokens (the encoder side's facade).

    audio [2, L] @ 48 kHz
      -> Frontend   (peak normalisation, mono, 24 kHz, normalised log-mel)   [B, 128, F]
      -> MuEncoder  (Conv2dSubsampling + the first k Conformer blocks)      [B, T, D]
      -> RVQ        (factorised, L2-normalised codes)                        [B, N, T]

One entry point per input convention (see docs/tokenizer.md):

* `encode_segments(segments)`: a list of segments [2, L_i] -> a list of codes [N, T_i],
  each segment encoded as the official `fetch_codes_batch` would (35.84 s -> 896 frames).
  With the song's peak (`song_peaks`) the whole-song normalisation of the official script
  is applied first, so the samples entering the model are the ones the script would see.
* `encode_padded(audio, lengths)`: the same computation on a zero-padded batch
  [B, 2, L] -> `EncodedBatch` (codes [B, N, T] padded with -1, optional embeddings).
* `encode_song(song)`: a whole song [2, T] -> exactly the official script's tokens
  (`sound2code`: its 40.96 s window tiling with repeated audio and its `+1` frame count).

Constructors: `from_config(config, seed=...)` (random weights) and `from_checkpoint(...)`
(official `muq.pt` / `mucodec.pt`, or a directory written by `jobs.convert_checkpoint`).
Both take the compute `precision` once; it cannot be changed afterwards. They live here
because the tokenizer is the encoder's facade; `builders` and `checkpoint` never import it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from core.checkpoint_dir import sha256_file
from core.key_map import load_strict
from core.precision import Precision, autocast_dtype
from mucodec.encoder import checkpoint as ckpt
from mucodec.encoder.builders import build_encoder, build_frontend, build_quantizer
from mucodec.encoder.config import TokenizerConfig
from mucodec.encoder.frontend import Frontend, song_peak_divisor
from mucodec.encoder.muencoder import MuEncoder
from mucodec.encoder.tiling import sound2code_output_len, sound2code_windows
from mucodec.quantizer import ResidualVectorQuantizer

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedBatch:
    """Tokens of a batch of segments.

    Attributes:
        codes: [B, N, T] int64; frames past `lengths[i]` are padding (-1).
        lengths: [B] valid frames per segment.
        embeddings: [B, T, D] the selected hidden state, if requested, else None.
    """

    codes: Tensor
    lengths: Tensor
    embeddings: Tensor | None = None

    def unbatch(self) -> list[Tensor]:
        """The codes of each segment without padding.

        Returns:
            A list of B int64 tensors [N, T_i].
        """
        return [c[:, :n] for c, n in zip(self.codes, self.lengths.tolist(), strict=True)]


@dataclass(frozen=True)
class Sound2CodeResult:
    """Tokens of a whole song in the official script's (`sound2code`) tiling.

    Attributes:
        codes: [N, output_len] int64, output_len = int(T / 48000 * 25) + 1.
        codes_untruncated: [N, windows * 1024] every window's codes, window-major.
        num_windows: Windows encoded (each 40.96 s + 10 ms, audio repeated to fill).
        embeddings: [output_len, D] selected hidden state of the kept frames, if asked.
    """

    codes: Tensor
    codes_untruncated: Tensor
    num_windows: int
    embeddings: Tensor | None = None


class MuCodecTokenizer(nn.Module):
    """Turns 48 kHz stereo audio into MuCodec tokens at 25 Hz."""

    def __init__(
        self,
        config: TokenizerConfig,
        *,
        frontend: Frontend,
        encoder: MuEncoder,
        quantizer: ResidualVectorQuantizer,
        precision: Precision = "float32",
        checkpoint_sha256: str | None = None,
        load_report: ckpt.LoadReport | None = None,
    ) -> None:
        """Receives built parts; use `from_config` or `from_checkpoint` to make one.

        Args:
            config: The config the parts were built from (recorded in provenance).
            frontend: Waveform -> features.
            encoder: Features -> selected hidden state.
            quantizer: Hidden state -> codes.
            precision: Autocast dtype of the MuEncoder ("float32": none). The front end
                and the code lookup stay float32 whatever it is (`core.precision`).
            checkpoint_sha256: Identity of the weights, when loaded from files.
            load_report: What loading official files verified and dropped, if it did.

        Raises:
            ValueError: on an unknown precision.
        """
        super().__init__()
        self._autocast_dtype = autocast_dtype(precision)
        self._precision = precision
        self.config = config
        self.frontend = frontend
        self.encoder = encoder
        self.quantizer = quantizer
        self.checkpoint_sha256 = checkpoint_sha256
        self.load_report = load_report
        self.eval()

    @property
    def precision(self) -> Precision:
        """The precision given at construction (read-only)."""
        return self._precision

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_config(
        cls, config: TokenizerConfig, seed: int | None = 0, *, precision: Precision = "float32"
    ) -> MuCodecTokenizer:
        """A tokenizer with random weights (tests, benchmarks).

        Args:
            config: What to build.
            seed: Seed of a private generator state for the initialisation; the global RNG
                is restored afterwards. None uses the global RNG as is.
            precision: Autocast dtype of the MuEncoder (see `__init__`).

        Returns:
            The tokenizer in eval mode, on CPU.
        """
        fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with fork:
            if seed is not None:
                torch.manual_seed(seed)
            return cls(
                config,
                frontend=build_frontend(config.frontend),
                encoder=build_encoder(config.encoder),
                quantizer=build_quantizer(config.quantizer),
                precision=precision,
            )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        *,
        muq: str | Path | None = None,
        mucodec: str | Path | None = None,
        config: TokenizerConfig | None = None,
        hash_official: bool = True,
        precision: Precision = "float32",
    ) -> MuCodecTokenizer:
        """Loads weights strictly, from our converted format or the official files.

        Loading official files keeps what was verified and dropped as `load_report`
        (logged once at INFO).

        Args:
            path: A directory written by `jobs.convert_checkpoint` (config inside).
            muq: Official `muq.pt` (fairseq); optional when `mucodec.pt` holds
                `muencoder.*` (then it is only verified and compared).
            mucodec: Official `mucodec.pt` (RVQ, resampler kernel, usually the encoder).
            config: Config for the official files; default `official` preset.
            hash_official: Record the sha256 of the official files (reads them fully).
            precision: Autocast dtype of the MuEncoder (see `__init__`).

        Returns:
            The tokenizer in eval mode, on CPU.

        Raises:
            ValueError: if both or neither kind of source is given.
            core.key_map.CheckpointError: on a missing / misshapen / unknown key, a
                wrong file, or a hash mismatch.
        """
        if path is not None:
            if muq is not None or mucodec is not None:
                raise ValueError("give either a converted checkpoint path or muq/mucodec")
            converted = ckpt.load_converted(path)
            tokenizer = cls._empty(
                converted.config, precision=precision, checkpoint_sha256=converted.sha256
            )
            load_strict(tokenizer, converted.state, str(path))
            return tokenizer
        if mucodec is None:
            raise ValueError("official weights need mucodec.pt (it holds the RVQ codebook)")
        config = config or TokenizerConfig()
        empty = cls._empty(config)
        state, report = ckpt.map_official_state(
            config,
            empty.state_dict().keys(),
            ckpt.read_mucodec_checkpoint(mucodec),
            ckpt.read_muq_checkpoint(muq) if muq is not None else None,
            sources=(str(mucodec), str(muq)),
        )
        load_strict(empty, state, str(mucodec))
        _log.info(
            "loaded encoder weights from %s; dropped %d unused official tensors; "
            "%d differ between muq.pt and mucodec.pt",
            report.encoder_source,
            len(report.dropped),
            len(report.differing_copies),
        )
        files = [p for p in (mucodec, muq) if p is not None]
        return cls(
            config,
            frontend=empty.frontend,
            encoder=empty.encoder,
            quantizer=empty.quantizer,
            precision=precision,
            checkpoint_sha256="+".join(sha256_file(p) for p in files) if hash_official else None,
            load_report=report,
        )

    @classmethod
    def _empty(
        cls,
        config: TokenizerConfig,
        *,
        precision: Precision = "float32",
        checkpoint_sha256: str | None = None,
        load_report: ckpt.LoadReport | None = None,
    ) -> MuCodecTokenizer:
        """Built without spending time on random initialisation (weights come next).

        The front end's buffers are cheap and computed for real; the encoder and the RVQ
        are allocated uninitialised.
        """
        with torch.device("meta"):
            encoder = build_encoder(config.encoder)
            quantizer = build_quantizer(config.quantizer)
        return cls(
            config,
            frontend=build_frontend(config.frontend),
            encoder=encoder.to_empty(device="cpu"),
            quantizer=quantizer.to_empty(device="cpu"),
            precision=precision,
            checkpoint_sha256=checkpoint_sha256,
            load_report=load_report,
        )

    # ----------------------------------------------------------------- facade

    @property
    def sample_rate(self) -> int:
        """Input sample rate (48 kHz)."""
        return self.config.frontend.input_sample_rate

    @property
    def frame_rate(self) -> int:
        """Tokens per second (25)."""
        return self.config.frontend.token_rate

    @property
    def num_codebooks(self) -> int:
        """Codes per frame (N)."""
        return self.config.quantizer.n_codebooks

    @property
    def codebook_size(self) -> int:
        """Entries per codebook (K)."""
        return self.config.quantizer.codebook_size

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.quantizer.quantizers[0].codebook.weight.device

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self._autocast_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype):
            yield

    @torch.inference_mode()
    def encode_padded(
        self,
        audio: Tensor,
        lengths: Tensor | Sequence[int] | None = None,
        *,
        song_peaks: Tensor | Sequence[float] | None = None,
        return_embeddings: bool = False,
    ) -> EncodedBatch:
        """Encodes a zero-padded batch of segments, each exactly as if encoded alone.

        Args:
            audio: [B, 2, L] float stereo at 48 kHz, full scale 1.0; shorter segments
                zero padded at the end.
            lengths: [B] valid samples per segment (each >= 3839, two frames' worth);
                None means all L.
            song_peaks: [B] whole-song peaks; applies the official script's song-level
                normalisation. None: only the per-segment one of `fetch_codes_batch`
                applies.
            return_embeddings: Also return the selected hidden state.

        Returns:
            `EncodedBatch` with codes [B, N, T], T = max tokens (L // 1920: 896 for
            35.84 s), padded with -1 past each segment's length.

        Raises:
            ValueError: if `audio` is not [B, 2, L] or a segment is too short.
        """
        audio = audio.to(self.device, torch.float32)
        if song_peaks is not None:
            divisor = song_peak_divisor(
                torch.as_tensor(song_peaks, dtype=torch.float32),
                self.config.frontend.song_peak_threshold,
            ).to(self.device)
            audio = audio / divisor[:, None, None]
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.device)
        front = self.frontend(audio, lengths)
        with self._autocast():
            encoded = self.encoder(front.features, front.frame_lengths)
        codes = self.quantizer.encode(encoded.hidden.transpose(1, 2))  # [B, N, T]
        valid = torch.arange(codes.shape[-1], device=codes.device) < encoded.lengths[:, None]
        codes = codes.masked_fill(~valid[:, None, :], -1)
        return EncodedBatch(
            codes=codes,
            lengths=encoded.lengths,
            embeddings=encoded.hidden if return_embeddings else None,
        )

    def encode_segments(
        self,
        segments: Sequence[Tensor],
        *,
        song_peaks: Sequence[float] | None = None,
    ) -> list[Tensor]:
        """Encodes segments of any lengths, each exactly as if encoded alone.

        They run as one zero-padded batch (`encode_padded`); padding never changes a
        segment's codes.

        Args:
            segments: S tensors [2, L_i], float stereo at 48 kHz, full scale 1.0 (a
                35.84 s segment gives 896 frames).
            song_peaks: [S] each segment's whole-song peak (shard metadata `song_peak`);
                applies the official script's song-level normalisation. None: only the
                per-segment one of `fetch_codes_batch` applies.

        Returns:
            S int64 tensors [N, L_i // 1920], on the tokenizer's device.

        Raises:
            ValueError: if a segment is not [2, L] or is too short for two frames.
        """
        for segment in segments:
            if segment.dim() != 2 or segment.shape[0] != 2:
                raise ValueError(f"a segment must be [2, L] stereo, got {tuple(segment.shape)}")
        lengths = [s.shape[-1] for s in segments]
        # Padded where the segments already are: a batch the caller put on the GPU must not
        # make a round trip through host memory.
        audio = torch.zeros(len(segments), 2, max(lengths), device=segments[0].device)
        for i, segment in enumerate(segments):
            audio[i, :, : lengths[i]] = segment
        batch = self.encode_padded(audio, lengths, song_peaks=song_peaks)
        return batch.unbatch()

    @torch.inference_mode()
    def encode_song(
        self, song: Tensor, batch_size: int = 3, return_embeddings: bool = False
    ) -> Sound2CodeResult:
        """Encodes a whole song into the official script's tokens (`MuCodec.sound2code`).

        Joint peak normalisation (0.8), window tiling with repeated audio, and the script's
        `int(T / 48000 * 25) + 1` frame count (see `mucodec.encoder.tiling`).

        Args:
            song: [2, T] (or [1, 2, T]) float stereo song at 48 kHz, any scale (it is
                peak-normalised here).
            batch_size: Windows per forward pass (does not change the tokens).
            return_embeddings: Also return the selected hidden state of the kept frames.

        Returns:
            `Sound2CodeResult`. The script returns `result.codes[None]` ([1, 1, output_len])
            for one codebook. For N > 1 the script's assembly is wrong (it keeps only
            codebook 0); here every codebook is kept, each truncated to output_len.
        """
        if song.dim() == 3:
            song = song[0]
        song = song.to(self.device, torch.float32)
        threshold = self.config.frontend.song_peak_threshold
        song = song / song_peak_divisor(song.abs().max(), threshold)
        windows = sound2code_windows(song)  # [W, 2, 1,966,560]
        batches = [
            self.encode_padded(chunk, return_embeddings=return_embeddings)
            for chunk in windows.split(batch_size)
        ]
        codes = torch.cat([b.codes for b in batches])  # [W, N, 1024]
        codes = codes.transpose(0, 1).reshape(self.num_codebooks, -1)  # window-major
        keep = sound2code_output_len(song.shape[-1])
        embeddings = None
        if return_embeddings:
            embeddings = torch.cat([b.embeddings for b in batches]).flatten(0, 1)[:keep]
        return Sound2CodeResult(
            codes=codes[:, :keep],
            codes_untruncated=codes,
            num_windows=windows.shape[0],
            embeddings=embeddings,
        )

    def extra_repr(self) -> str:
        """What `print(tokenizer)` shows beside the modules.

        Returns:
            Config name, selected layer and precision.
        """
        return (
            f"name={self.config.name!r}, output_layer={self.config.encoder.output_layer}, "
            f"precision={self.precision!r}"
        )
