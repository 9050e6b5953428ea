"""`MuCodecDecoder`: 25 Hz MuCodec codes -> 48 kHz stereo audio, batched.

The facade over the decoder chain (decoder spec sections 1 and 8):

1. the code sequence is tiled to whole 1024-code windows that overlap by 256 codes;
2. each window's latents are sampled by flow matching (`flow.CodeToLatent`), the first
   128 frames of every later window continuing from the previous window's last 128;
3. each window's latents go through the Mel-VAE (`vae.py`) and HiFi-GAN (`vocoder.py`),
   one row per stereo side;
4. the windows' waveforms are cross-faded over their 10.24 s overlap and cut to
   `1920 * N` samples.

Where the reference crashes or is wrong (spec section 13) we do the evident right thing;
`docs/decoder.md` lists every difference. In short: any batch size (each row has its own
timestep); the padding rule uses the 256-code overlap (the reference's 128 crashes for
N' = 1664 + 768k); the output has exactly `1920 * N` samples (the reference's float
truncation can drop one); statistics of the normaliser never update.

Noise is per item and per window, drawn from the item's seed on CPU, so an item decodes
identically whatever batch it is in and on whatever device.

Shapes: B batch, n codebooks, N codes, C latent channels (32), T latent frames, F latent
bins (32), S samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.precision import Precision, autocast_dtype, float32_region
from mucodec.decoder.config import DecoderConfig, SamplingConfig, WindowConfig
from mucodec.decoder.flow import CodeToLatent
from mucodec.decoder.sampling import seeded_noise
from mucodec.decoder.vae import MelVAEDecoder
from mucodec.decoder.vocoder import HiFiGAN, linear_crossfade, vocode_chunked

__all__ = ["MuCodecDecoder", "WindowPlan", "plan_windows", "tile_codes"]


@dataclass(frozen=True)
class WindowPlan:
    """How a sequence of N codes is cut into windows.

    Attributes:
        n_codes: N, codes given.
        padded_codes: Length after periodic tiling (1024, or 256 + 768 K).
        starts: First code of every window (0, 768, ...).
    """

    n_codes: int
    padded_codes: int
    starts: tuple[int, ...]


def plan_windows(n_codes: int, window: WindowConfig) -> WindowPlan:
    """The reference's window layout, with its padding rule fixed.

    Short sequences are tiled to one window; longer ones to `overlap + hop * K`, the
    smallest whole number of windows. The reference tests `(N' - 128) % 768` (the overlap
    in *frames*) instead of `(N' - 256) % 768` and so skips the padding, then crashes, for
    N' = 1664 + 768 k; both rules give the same layout for every other N.

    Args:
        n_codes: N >= 1.
        window: Window geometry.

    Returns:
        The plan.
    """
    if n_codes < 1:
        raise ValueError("cannot decode an empty code sequence")
    size, hop, overlap = window.window_codes, window.hop_codes, window.overlap_codes
    length = max(n_codes, size)
    if (length - overlap) % hop:
        length = math.ceil((length - overlap) / hop) * hop + overlap
    starts = tuple(range(0, length - hop, hop))
    return WindowPlan(n_codes=n_codes, padded_codes=length, starts=starts)


def tile_codes(codes: Tensor, length: int) -> Tensor:
    """Repeats codes periodically to `length` (what the reference's doubling produces).

    Args:
        codes: [B, n, N].
        length: Target length >= N.

    Returns:
        [B, n, length], `out[..., i] = codes[..., i % N]`.
    """
    index = torch.arange(length, device=codes.device) % codes.shape[-1]
    return codes[..., index]


class MuCodecDecoder(nn.Module):
    """Codes -> 48 kHz stereo audio, from built parts.

    Build one with `mucodec.decoder.builders.build_decoder` (random weights) or load one
    with `mucodec.decoder.checkpoint.load_decoder` / `load_official_decoder`; this module
    imports neither, so the parts stay swappable in tests.

    State-dict layout (our checkpoint format): `flow.*`, `vae.*`, `vocoder.*`.
    """

    def __init__(
        self,
        *,
        config: DecoderConfig,
        flow: CodeToLatent,
        vae: MelVAEDecoder,
        vocoder: HiFiGAN,
        precision: Precision = "float32",
    ) -> None:
        """Receives built parts.

        Args:
            config: The config the parts were built from.
            flow: Codes -> latents (conditioner, DiT estimator, normaliser).
            vae: Latents -> mel spectrogram.
            vocoder: Mel spectrogram -> waveform.
            precision: Autocast dtype of the estimator and the VAE in every decode
                ("float32": none); solver state, guidance, vocoder and cross-fades stay
                float32. Ignored by `SamplingConfig.official_way`, which replays the
                reference's own precision.

        Raises:
            ValueError: on an unknown precision.
        """
        super().__init__()
        self._autocast_dtype = autocast_dtype(precision)
        self._precision = precision
        self.config = config
        self.flow = flow
        self.vae = vae
        self.vocoder = vocoder

    @property
    def precision(self) -> Precision:
        """The precision given at construction (read-only)."""
        return self._precision

    def use_window(self, window: WindowConfig) -> MuCodecDecoder:
        """Decode with `window` from now on; the weights do not depend on it.

        Raises:
            ValueError: if its overlap is not a whole number of latent frames.
        """
        self.config = dataclasses.replace(self.config, window=window)  # Checks the geometry.
        return self

    # --- codec facade -----------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """Output sample rate (48000 Hz)."""
        return self.config.vocoder.sample_rate

    @property
    def frame_rate(self) -> int:
        """Codes per second (25)."""
        return self.config.window.token_rate

    @property
    def num_codebooks(self) -> int:
        """Codebooks of the conditioning RVQ."""
        return self.flow.conditioner.rvq.n_codebooks

    @property
    def codebook_size(self) -> int:
        """Entries per codebook."""
        return self.flow.conditioner.rvq.codebook_size

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.vae.post_quant_conv.weight.device

    @torch.no_grad()
    def decode(
        self,
        codes: Tensor,
        *,
        seeds: int | Sequence[int] | None = None,
        noise: Sequence[Tensor] | None = None,
        sampling: SamplingConfig | None = None,
    ) -> Tensor:
        """Decodes a batch of code sequences to 48 kHz stereo audio.

        Args:
            codes: [B, n, N] integer codes (n <= num_codebooks), any N >= 1.
            seeds: Noise seed per item (an int applies to every item); default
                `sampling.seed`. Item b's noise depends only on its seed and the window.
            noise: Explicit starting noise, one [B, C, T, F] tensor per window (overrides
                the seeds; used to replay recorded noise).
            sampling: Steps, guidance and execution mode (default: the config's).

        Returns:
            [B, 2, 1920 * N] float32 waveform in [-1, 1] on the decoder's device; row 0
            left, row 1 right.
        """
        sampling = sampling or self.config.sampling
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, n, N], got {tuple(codes.shape)}")
        batch, _, n_codes = codes.shape
        plan = plan_windows(n_codes, self.config.window)
        codes = tile_codes(codes.to(self.device).long(), plan.padded_codes)
        if noise is None:
            noise = self._seeded_noise(batch, len(plan.starts), seeds, sampling.seed)
        if len(noise) != len(plan.starts):
            raise ValueError(f"{len(plan.starts)} windows need as many noise tensors")

        if sampling.official_way:
            # The reference runs one item at a time (it cannot batch).
            rows = [
                self._decode_windows(
                    codes[b : b + 1], [n[b : b + 1] for n in noise], plan, sampling
                )
                for b in range(batch)
            ]
            audio = torch.cat(rows, dim=0)
        else:
            audio = self._decode_windows(codes, list(noise), plan, sampling)
        return audio[..., : n_codes * self.config.samples_per_code]

    def _seeded_noise(
        self, batch: int, n_windows: int, seeds: int | Sequence[int] | None, default: int
    ) -> list[Tensor]:
        """One [B, C, T, F] tensor per window; item b from its own generator."""
        if seeds is None:
            seeds = default
        if isinstance(seeds, int):
            seeds = [seeds] * batch
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
        cfg = self.config
        frames = cfg.window.window_codes // cfg.flow.conditioner.codes_per_frame
        shape = (n_windows, cfg.flow.latent_channels, frames, cfg.flow.latent_freq)
        per_item = [seeded_noise(shape, seed, device=self.device) for seed in seeds]
        return [torch.stack([item[w] for item in per_item]) for w in range(n_windows)]

    def _decode_windows(
        self, codes: Tensor, noise: list[Tensor], plan: WindowPlan, sampling: SamplingConfig
    ) -> Tensor:
        """Samples, renders and cross-fades every window of one batch.

        Args:
            codes: [B, n, padded] tiled codes.
            noise: Per window [B, C, T, F].
            plan: The window layout.
            sampling: Run-time choices.

        Returns:
            [B, 2, S_assembled] float32.
        """
        cfg = self.config
        window = cfg.window
        overlap_frames = window.overlap_codes // cfg.flow.conditioner.codes_per_frame
        overlap_samples = window.overlap_codes * cfg.samples_per_code
        on_cuda = self.device.type == "cuda"
        if sampling.official_way:
            flow_dtype = torch.float16 if on_cuda else None  # reference: autocast("cuda")
            render_dtype = None
        else:
            flow_dtype = render_dtype = self._autocast_dtype

        audio: Tensor | None = None
        previous: Tensor | None = None
        for w, start in enumerate(plan.starts):
            latents = self.flow.sample(
                codes[..., start : start + window.window_codes],
                noise[w].to(self.device),
                num_steps=sampling.num_steps,
                guidance_scale=sampling.guidance_scale,
                incontext=None if previous is None else previous[:, :, -overlap_frames:],
                incontext_frames=0 if previous is None else overlap_frames,
                autocast_dtype=flow_dtype,
                float32_guidance=not sampling.official_way,
            )  # [B, C, T, F]
            previous = latents
            chunked = sampling.official_way or sampling.vocoder_chunks
            # One item at a time: a window's full-resolution VAE activations are ~1 GB per
            # stereo side at full size, and two rows already fill a GPU.
            wave = torch.cat(
                [
                    self._render(
                        item,
                        chunked=chunked,
                        reuse_interior=not sampling.official_way,
                        autocast_dtype=render_dtype,
                    )
                    for item in latents.split(1)
                ]
            )
            wave = wave[..., : window.window_codes * cfg.samples_per_code]  # [B, 2, S_w]
            audio = wave if audio is None else self._crossfade(audio, wave, overlap_samples)
        assert audio is not None
        return audio

    @staticmethod
    def _crossfade(head: Tensor, tail: Tensor, overlap: int) -> Tensor:
        """[B, 2, S1], [B, 2, S2] -> [B, 2, S1 + S2 - overlap] (linear, float64 blend)."""
        batch = head.shape[0]
        joined = linear_crossfade(head.flatten(0, 1), tail.flatten(0, 1), overlap)
        return joined.view(batch, 2, -1)

    @torch.no_grad()
    def render(
        self, latents: Tensor, *, chunked: bool = True, reuse_interior: bool = True
    ) -> Tensor:
        """Latents -> waveform: Mel-VAE then HiFi-GAN, stereo sides as separate rows.

        Args:
            latents: [B, C, T, F] in the VAE's scaled latent space; channels 0..C/2-1 are
                the left side, C/2..C-1 the right.
            chunked: Vocode in the reference's 3/4-overlapping 1024-frame chunks (True) or
                the whole spectrogram at once (4x cheaper; differs only near chunk seams).
            reuse_interior: Build the chunks from one whole pass plus edge pieces (same
                values up to rounding, `vocoder.vocode_chunked`); False vocodes every chunk
                as the reference does.

        Returns:
            [B, 2, S] float32 with S = 480 * 8T (+16 when not chunked).

        The VAE runs under autocast to the decoder's `precision`. The vocoder always runs
        in its weights' dtype (float32 unless cast): its output is the waveform, and a
        bf16 vocoder would put bf16's 8-bit mantissa (a ~-48 dB noise floor) straight into
        the audio, for ~7% of the FLOPs.
        """
        return self._render(
            latents,
            chunked=chunked,
            reuse_interior=reuse_interior,
            autocast_dtype=self._autocast_dtype,
        )

    def _render(
        self,
        latents: Tensor,
        *,
        chunked: bool,
        reuse_interior: bool,
        autocast_dtype: torch.dtype | None,
    ) -> Tensor:
        """`render` with an explicit VAE autocast dtype (None: float32)."""
        batch, channels, frames, bins = latents.shape
        z = latents.reshape(batch * 2, channels // 2, frames, bins)  # [2B, C/2, T, F]
        autocast = (
            torch.autocast(device_type=latents.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            mel = self.vae(z.to(self.vae.post_quant_conv.weight.dtype))  # [2B, 1, 8T, 8F]
        mel = mel.squeeze(1).transpose(1, 2)  # [2B, M, 8T]
        mel = mel.to(self.vocoder.conv_pre.weight.dtype)
        with float32_region(latents.device):
            if chunked:
                wave = vocode_chunked(self.vocoder, mel, reuse_interior=reuse_interior)
            else:
                wave = self.vocoder(mel)
        return wave.float().view(batch, 2, -1)

    def with_sampling(self, **changes: object) -> SamplingConfig:
        """The config's sampling settings with `changes` applied (a convenience).

        Args:
            **changes: `SamplingConfig` fields to replace, e.g. `num_steps=20`.

        Returns:
            A new `SamplingConfig`; the decoder's config is unchanged.
        """
        return dataclasses.replace(self.config.sampling, **changes)  # type: ignore[arg-type]
