"""How many segments one encode call may take on a GPU: as many as its free memory holds.

On its first batch the actor encodes quiet noise as long as the batch's longest segment,
once alone and once two together, reads the peak memory of each call, and so learns what
one more segment costs; the batch is what fits in its share of the free memory (the GPU may
be shared by several codecs' actors, and each actor runs two calls at once). Measured, not
tabled, so it holds for every codec, preset and precision.
"""

from __future__ import annotations

import torch

from audio_codecs.base import Codec

HEADROOM = 0.8  # Of the free memory: the allocator's fragmentation and CUDA's own needs.
MOST = 512  # Never more per call: past this a GPU gains nothing and a batch's PCM is GBs.


def fitting_batch(peak_one: int, peak_two: int, free: int, share: float) -> int:
    """Segments per call that fit in `share` of `free` bytes, given the peak bytes of a
    call of one segment and of two (at least 1, at most `MOST`)."""
    per_segment = max(peak_two - peak_one, 1)
    fixed = max(peak_one - per_segment, 0)
    budget = free * share * HEADROOM - fixed
    return max(1, min(MOST, int(budget // per_segment)))


def probe_batch(codec: Codec, share: float, samples: int) -> int:
    """The batch `fitting_batch` allows for `codec` on its CUDA device, measured now with
    segments of `samples` frames."""
    device = codec.device
    torch.cuda.synchronize(device)
    free, _ = torch.cuda.mem_get_info(device)
    noise = torch.randint(-64, 64, (samples, 2), dtype=torch.int16)
    peaks = []
    for count in (1, 2):
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        codec.encode_pcm16([noise] * count, song_peaks=[0.5] * count, gains=[1.0] * count)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    return fitting_batch(peaks[0], peaks[1], free, share)
