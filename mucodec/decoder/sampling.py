"""Euler solver of the flow-matching ODE, with in-context frames and seeded noise.

Conditional flow matching (Lipman et al., 2023, Flow Matching for Generative Modeling)
learns a velocity field that transports N(0, I) at t = 0 to the data at t = 1 along
straight paths `x_t = (1 - (1 - sigma_min) t) x_0 + t x_1`. Sampling integrates
`dx/dt = v(x, t)` with explicit Euler steps.

MuCodec adds in-context continuation (decoder spec section 7): frames already known (the
end of the previous window) are reset at the start of every step to the point of their
straight path at the current time, so the network always sees them "on schedule", and
are overwritten with the known values at the end (by the caller).

Two details are kept from the reference because they change the numbers:

* the time grid is `torch.linspace(0, 1, n + 1)` in float32, and the time fed to the
  network is the float32 *accumulation* `t += dt` (not `k / n`);
* `dt` for step k+1 is `t_span[k + 1] - t`, with the accumulated `t`.

`euler_sample` is a pure function of its inputs: noise comes in as a tensor, drawn by
`seeded_noise` from an explicit generator, never from the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Velocity", "euler_sample", "seeded_noise"]

# (x [B, C, T, F], t [B]) -> velocity [B, C, T, F]
Velocity = Callable[[Tensor, Tensor], Tensor]


def seeded_noise(
    shape: tuple[int, ...], seed: int, *, device: torch.device | str = "cpu"
) -> Tensor:
    """Standard normal float32 noise from its own generator, drawn on CPU.

    Drawing on CPU makes the noise of a seed identical on every device.

    Args:
        shape: Shape of the sample.
        seed: Generator seed.
        device: Where the result is placed.

    Returns:
        float32 tensor of `shape`.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def euler_sample(
    velocity: Velocity,
    noise: Tensor,
    num_steps: int,
    *,
    incontext: Tensor | None = None,
    incontext_frames: int = 0,
    sigma_min: float = 1e-4,
) -> Tensor:
    """Integrates the flow from `noise` at t = 0 to t = 1 with `num_steps` Euler steps.

    Args:
        velocity: The (guided) velocity field, called with x [B, C, T, F] and t [B].
        noise: [B, C, T, F] starting point x_0 (float32).
        num_steps: Number of Euler steps (>= 1).
        incontext: [B, C, T, F] known targets in the normalised space; only the first
            `incontext_frames` frames are read.
        incontext_frames: Frames at the start that are known (0: none).
        sigma_min: Noise floor of the straight path.

    Returns:
        [B, C, T, F] float32 x at t = 1. The in-context frames hold the solver's last
        state there; the caller overwrites them with the known values.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if incontext_frames and incontext is None:
        raise ValueError("incontext_frames > 0 needs the incontext tensor")
    t_span = torch.linspace(0, 1, num_steps + 1, dtype=torch.float32)
    x = noise.float().clone()
    n_ic = incontext_frames
    batch = x.shape[0]
    t = t_span[0].to(x.device)
    dt = (t_span[1] - t_span[0]).to(x.device)
    for step in range(1, num_steps + 1):
        if n_ic:
            # Known frames sit on their straight path from the noise to the target.
            x[:, :, :n_ic] = (1 - (1 - sigma_min) * t) * noise[:, :, :n_ic] + t * incontext[
                :, :, :n_ic
            ]
        v = velocity(x, t.expand(batch))
        x = x + dt * v
        t = t + dt
        if step < num_steps:
            dt = t_span[step + 1].to(x.device) - t
    return x
