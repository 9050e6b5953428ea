"""Codes -> latents: conditioning, classifier-free guidance, and one window of sampling.

The three parts of MuCodec's flow-matching decoder (decoder spec sections 3, 5, 7):

* `CodeConditioner`: codes -> RVQ embeddings (`ResidualVectorQuantizer.from_codes`) ->
  a per-code Linear -> the conditioning grid `[B, C, T, F]`, two codes per latent frame.
* `GuidedVelocity`: wraps the velocity network with the channel layout
  `[x | in-context | cond]` and classifier-free guidance (Ho & Salimans, 2022): the
  unconditional branch sees an all-zero cond, `v = v_u + g (v_c - v_u)`.
* `CodeToLatent.sample`: one window of the reference's `inference_codes`: condition,
  project the in-context latents with the normaliser, integrate with
  `sampling.euler_sample`, put the known frames back, un-normalise.

Einstein notation: B batch, n codebooks used, Tc codes, C latent channels, T = Tc / 2
latent frames, F frequency bins, E = cond width (C / 2 * F).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mucodec.decoder.dit import DiT
from mucodec.decoder.normalizer import FeatureNormalizer
from mucodec.decoder.sampling import euler_sample
from mucodec.quantizer import ResidualVectorQuantizer

__all__ = ["CodeConditioner", "CodeToLatent", "GuidedVelocity"]


class CodeConditioner(nn.Module):
    """Codes -> conditioning grid, and the learned "no condition" embedding.

    `null_cond` is the reference's `zero_cond_embedding1` ([C * F]): it replaces the cond of
    frames beyond `latent_length` in `CodeToLatent.sample`. Whole-window decoding never has
    such frames, and the guidance's unconditional branch uses zeros, not this.
    """

    def __init__(
        self,
        *,
        rvq: ResidualVectorQuantizer,
        proj: nn.Linear,
        channels: int,
        bins: int,
        codes_per_frame: int = 2,
    ) -> None:
        """Receives built parts (see `mucodec.decoder.builders.build_code_to_latent`).

        Args:
            rvq: The residual vector quantiser whose codebooks embed the codes.
            proj: Linear map from the RVQ's output width to `channels * bins`.
            channels: Latent channels C of the conditioning grid.
            bins: Latent frequency bins F.
            codes_per_frame: Codes per latent frame (2: 25 Hz codes, 12.5 Hz frames).
        """
        super().__init__()
        self.rvq = rvq
        self.proj = proj
        self.channels = channels
        self.bins = bins
        self.codes_per_frame = codes_per_frame
        self.null_cond = nn.Parameter(torch.zeros(channels * bins))

    def forward(self, codes: Tensor) -> Tensor:
        """Embeds codes on the latent grid.

        Args:
            codes: [B, n, Tc] integer codes; Tc a multiple of `codes_per_frame`.

        Returns:
            [B, C, Tc / k, F] float32 cond (k = codes_per_frame); channel `p * C/k + j` of
            frame f holds the Linear's outputs `j * F .. (j+1) * F` of code `k f + p`.
        """
        batch, _, n_codes = codes.shape
        k = self.codes_per_frame
        if n_codes % k:
            raise ValueError(f"number of codes {n_codes} is not a multiple of {k}")
        z_q = self.rvq.from_codes(codes)  # [B, D, Tc]
        e = self.proj(z_q.transpose(1, 2).to(self.proj.weight.dtype))  # [B, Tc, E]
        # [B, Tc, E] -> [B, T, k, C/k, F] -> [B, T, C, F]: the k codes of a frame stack.
        e = e.float().reshape(batch, n_codes // k, self.channels, self.bins)
        return e.permute(0, 2, 1, 3)  # [B, C, T, F]

    def mask_beyond(self, cond: Tensor, latent_length: int) -> Tensor:
        """Replaces the cond of frames >= `latent_length` with `null_cond`.

        Args:
            cond: [B, C, T, F].
            latent_length: Frames that keep their cond.

        Returns:
            [B, C, T, F].
        """
        frames = cond.shape[2]
        if latent_length >= frames:
            return cond
        keep = (torch.arange(frames, device=cond.device) < latent_length)[None, None, :, None]
        null = self.null_cond.float().view(1, self.channels, 1, self.bins)
        return torch.where(keep, cond, null)


@dataclass
class GuidedVelocity:
    """The velocity field of one window: estimator on `[x | in-context | cond]` with CFG.

    Attributes:
        estimator: The velocity network.
        cond: [B, C, T, F] conditioning grid (already masked).
        incontext: [B, C, T, F] normalised known latents (zero beyond the known frames).
        guidance_scale: CFG scale; <= 1 runs the conditional branch only.
        compute_dtype: dtype of the estimator's input (the model's weights dtype), or None
            to leave the input float32 (e.g. under autocast).
        float32_output: Return float32 velocities (our default); False leaves the
            estimator's dtype, as the reference's fp16 autocast run does.
    """

    estimator: DiT
    cond: Tensor
    incontext: Tensor
    guidance_scale: float = 1.5
    compute_dtype: torch.dtype | None = None
    float32_output: bool = True

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """Velocity at x [B, C, T, F], times t [B] -> [B, C, T, F]."""
        if self.guidance_scale > 1.0:
            # Rows 0..B-1 unconditional (zero cond), B..2B-1 conditional; same x and t.
            uncond = torch.cat([x, self.incontext, torch.zeros_like(self.cond)], dim=1)
            cond = torch.cat([x, self.incontext, self.cond], dim=1)
            h = torch.cat([uncond, cond], dim=0)  # [2B, 3C, T, F]
            v_uncond, v_cond = self._run(h, torch.cat([t, t])).chunk(2, dim=0)
            v = v_uncond + self.guidance_scale * (v_cond - v_uncond)
        else:
            v = self._run(torch.cat([x, self.incontext, self.cond], dim=1), t)
        return v.float() if self.float32_output else v

    def _run(self, h: Tensor, t: Tensor) -> Tensor:
        if self.compute_dtype is not None:
            h = h.to(self.compute_dtype)
        out = self.estimator(h, t)
        return out.float() if self.float32_output else out


class CodeToLatent(nn.Module):
    """One window of code -> latent generation (the reference's `inference_codes`).

    Built by injection: the conditioner, the velocity network and the normaliser.
    """

    def __init__(
        self,
        *,
        conditioner: CodeConditioner,
        estimator: DiT,
        normalizer: FeatureNormalizer,
        sigma_min: float = 1e-4,
    ) -> None:
        """Receives built parts (see `mucodec.decoder.builders.build_code_to_latent`).

        Args:
            conditioner: Codes -> conditioning grid.
            estimator: The velocity network.
            normalizer: Latent statistics (latents are sampled standardised).
            sigma_min: The flow's minimum noise level.
        """
        super().__init__()
        self.conditioner = conditioner
        self.estimator = estimator
        self.normalizer = normalizer
        self.sigma_min = sigma_min

    @torch.no_grad()
    def sample(
        self,
        codes: Tensor,
        noise: Tensor,
        *,
        num_steps: int,
        guidance_scale: float = 1.5,
        incontext: Tensor | None = None,
        incontext_frames: int = 0,
        latent_length: int | None = None,
        autocast_dtype: torch.dtype | None = None,
        float32_guidance: bool = True,
    ) -> Tensor:
        """Generates the latents of one window.

        Args:
            codes: [B, n, Tc] codes of the window.
            noise: [B, C, Tc/2, F] starting noise.
            num_steps: Euler steps.
            guidance_scale: CFG scale.
            incontext: [B, C, >= incontext_frames, F] known latents (VAE latent space) of
                the first frames, e.g. the previous window's last frames.
            incontext_frames: Number of known frames.
            latent_length: Frames that get their cond; later ones get `null_cond`
                (None: all frames, as whole-window decoding does).
            autocast_dtype: Run the estimator under autocast to this dtype (None: in its
                weights' dtype, float32 unless the model was cast).
            float32_guidance: Combine guidance and step in float32 (ours). False keeps the
                estimator's output dtype, as the reference's fp16 autocast run does.

        Returns:
            [B, C, Tc/2, F] float32 latents in the VAE's (scaled) latent space.
        """
        cond = self.conditioner(codes)  # [B, C, T, F]
        if noise.shape != cond.shape:
            raise ValueError(f"noise {tuple(noise.shape)} != cond grid {tuple(cond.shape)}")
        if latent_length is not None:
            cond = self.conditioner.mask_beyond(cond, latent_length)

        # Known frames, projected to the normalised space; exactly zero elsewhere.
        ic = torch.zeros_like(cond)
        if incontext_frames:
            if incontext is None or incontext.shape[2] < incontext_frames:
                raise ValueError(f"incontext must hold at least {incontext_frames} frames")
            known = incontext[:, :, :incontext_frames].to(cond.device)
            ic[:, :, :incontext_frames] = self.normalizer.project(known)

        velocity = GuidedVelocity(
            estimator=self.estimator,
            cond=cond,
            incontext=ic,
            guidance_scale=guidance_scale,
            compute_dtype=self.estimator.proj_out.weight.dtype if autocast_dtype is None else None,
            float32_output=float32_guidance,
        )
        autocast = (
            torch.autocast(device_type=noise.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            x = euler_sample(
                velocity,
                noise.float(),
                num_steps,
                incontext=ic,
                incontext_frames=incontext_frames,
                sigma_min=self.sigma_min,
            )
        x = x.float()
        x[:, :, :incontext_frames] = ic[:, :, :incontext_frames]
        return self.normalizer.unproject(x)
