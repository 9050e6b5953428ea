"""The Winograd road of the subsampling against the reference arithmetic.

The golden vectors check both roads on the tiny model (test_golden.py); here the
convolution itself is checked on shapes the golden model does not have (sizes that are not
whole tiles, strips that do not divide the width, one pixel), against float64, and the
subsampling's fast road against its reference road with BatchNorm statistics that are not
the identity, in padded batches.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mucodec.encoder.builders import build_subsampling
from mucodec.encoder.config import tiny
from mucodec.encoder.subsampling import Conv2dSubsampling
from mucodec.encoder.winograd import winograd_conv3x3, winograd_kernels


@pytest.mark.parametrize(
    ("height", "width", "strip_tiles"),
    [(8, 16, 8), (7, 13, 2), (1, 1, 8), (5, 30, 3), (64, 37, 4)],
)
def test_winograd_equals_direct_convolution(height: int, width: int, strip_tiles: int) -> None:
    generator = torch.Generator().manual_seed(height * 100 + width)
    x = torch.randn(2, 6, height, width, generator=generator)
    weight = torch.randn(5, 6, 3, 3, generator=generator) / 7
    bias = torch.randn(5, generator=generator)

    out = winograd_conv3x3(
        x.permute(0, 2, 3, 1), winograd_kernels(weight), bias, strip_tiles=strip_tiles
    )

    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    assert out.shape == (2, height, width, 5)
    torch.testing.assert_close(out.permute(0, 3, 1, 2).double(), exact, atol=2e-5, rtol=0)


def test_winograd_without_bias_and_kernel_layout() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 9, 11, 4, generator=generator)
    weight = torch.randn(3, 4, 3, 3, generator=generator)

    kernels = winograd_kernels(weight)
    out = winograd_conv3x3(x, kernels)

    assert kernels.shape == (36, 4, 3) and kernels.is_contiguous()
    exact = F.conv2d(x.permute(0, 3, 1, 2).double(), weight.double(), padding=1)
    torch.testing.assert_close(out.permute(0, 3, 1, 2).double(), exact, atol=1e-4, rtol=0)


def _subsampling_with_statistics(seed: int) -> Conv2dSubsampling:
    """The tiny subsampling with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    encoder = dataclasses.replace(tiny().encoder, conv_dim=16)
    subsampling = build_subsampling(encoder)
    for module in subsampling.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1, 0.3)
            module.bias.data.normal_(0, 0.3)
    return subsampling.eval()


def test_fast_road_equals_reference_road_in_a_padded_batch() -> None:
    subsampling = _subsampling_with_statistics(seed=5)
    features = torch.randn(4, 128, 96)
    features[1, :, 40:] = 0.7  # padding content must not matter on either road
    lengths = torch.tensor([96, 40, 68, 0])

    with torch.inference_mode():
        assert subsampling._takes_fast_road(features)
        fast = subsampling(features, lengths)
        subsampling.use_winograd = False
        assert not subsampling._takes_fast_road(features)
        reference = subsampling(features, lengths)

    assert fast.shape == reference.shape == (4, 24, 256)
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=0)
    # Past an item's end (an empty item: everywhere) both roads hold the projection of zeros.
    torch.testing.assert_close(fast[1, 10:], subsampling.proj.bias.expand(14, -1))
    torch.testing.assert_close(fast[3], subsampling.proj.bias.expand(24, -1))


def test_training_gradients_and_autocast_keep_the_reference_road() -> None:
    subsampling = _subsampling_with_statistics(seed=6)
    features = torch.randn(1, 128, 16)

    assert not subsampling._takes_fast_road(features)  # gradients wanted
    with torch.no_grad():
        assert subsampling._takes_fast_road(features)
        assert not subsampling._takes_fast_road(features.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not subsampling._takes_fast_road(features)
        subsampling.train()
        assert not subsampling._takes_fast_road(features)
