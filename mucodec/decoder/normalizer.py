"""Feature normaliser: the flow runs on per-(channel, bin) standardised VAE latents.

MuCodec's `Feature2DProcessor` keeps running sums of the latents it saw in training
(`counts`, `sum_x`, `sum_x2`) and standardises every (channel, frequency bin) with the mean
and standard deviation derived from them; time shares the statistics. The decoder projects
the in-context latents into that space and maps the solver's output back.

Deviation from the reference (decoder spec section 5): the reference keeps *updating* the
sums at inference whenever `counts < num_samples` (100000), even under `no_grad`, so such a
checkpoint would change its own statistics with every decode and make outputs depend on
unrelated random tensors. Ours never updates (the statistics are a fixed property of the
checkpoint) and `check_frozen` warns when a checkpoint would have updated in the reference.

Shapes: B batch, C latent channels, T frames, F frequency bins.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

__all__ = ["FeatureNormalizer"]


class FeatureNormalizer(nn.Module):
    """Standardises latents per (channel, frequency bin) with checkpoint statistics.

    Buffers (the official `normfeat.*` names): `counts [1]`, `sum_x [C, F]`,
    `sum_x2 [C, F]`, and the unused `sum_target_x2 [C, F]` (kept for strict loading).
    """

    def __init__(self, channels: int, bins: int, num_samples: int = 100000) -> None:
        """Creates the statistics buffers, identity (mean 0, std 1) until loaded.

        Args:
            channels: Latent channels C.
            bins: Latent frequency bins F.
            num_samples: Count the identity statistics are expressed with until a checkpoint
                replaces them.
        """
        super().__init__()
        self.num_samples = num_samples
        # Identity statistics until a checkpoint is loaded: mean 0, std 1.
        self.register_buffer("counts", torch.full((1,), float(num_samples)))
        self.register_buffer("sum_x", torch.zeros(channels, bins))
        self.register_buffer("sum_x2", torch.full((channels, bins), float(num_samples)))
        self.register_buffer("sum_target_x2", torch.zeros(channels, bins))

    def statistics(self) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation, exactly as the reference derives them.

        Recomputed at every call (cheap) so that they always follow the loaded buffers.

        Returns:
            (mean, std), each [C, F] float32.
        """
        counts = self.counts.float()
        mean = self.sum_x.float() / counts
        std = torch.sqrt(torch.clamp(self.sum_x2.float() / counts - mean**2, min=0))
        return mean, std

    def project(self, x: Tensor) -> Tensor:
        """VAE latent -> normalised space: `(x - mean) * (1 / std)`.

        Args:
            x: [B, C, T, F] latents.

        Returns:
            [B, C, T, F] float32.
        """
        mean, std = self.statistics()
        inv_std = 1.0 / torch.clamp(std, min=1e-12)
        return (x.float() - mean[None, :, None, :]) * inv_std[None, :, None, :]

    def unproject(self, x: Tensor) -> Tensor:
        """Normalised space -> VAE latent: `x * std + mean`.

        Args:
            x: [B, C, T, F].

        Returns:
            [B, C, T, F] float32.
        """
        mean, std = self.statistics()
        return x.float() * std[None, :, None, :] + mean[None, :, None, :]

    def check_frozen(self) -> bool:
        """Warns if the reference would still update these statistics at inference.

        Returns:
            True when `counts >= num_samples` (the reference's statistics are frozen, so
            ours and the reference's agree), False otherwise.
        """
        if self.counts.is_meta:
            return True
        count = float(self.counts.reshape(-1)[0])
        if count < self.num_samples:
            warnings.warn(
                f"normaliser counts {count:.0f} < {self.num_samples}: the reference would keep "
                "updating these statistics at every decode; we keep them fixed",
                stacklevel=2,
            )
            return False
        return True
