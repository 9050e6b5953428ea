"""Winograd F(4x4, 3x3): the subsampling's stride-1 3x3 convolutions with 4x fewer multiplies.

Lavin & Gray, 2016 (Fast Algorithms for Convolutional Neural Networks). A 4x4 output tile
of a 3x3 convolution is computed from a 6x6 input tile as

    Y = A^T [ (G g G^T) * (B^T d B) ] A

where `*` is elementwise, summed over input channels. Per tile and channel pair that is
36 multiplies instead of 4 x 4 x 9 = 144; the sum over channels of the 36 products is 36
matrix products [tiles, C_in] x [C_in, C_out], so nearly all the work stays in GEMMs.
The transforms B^T . B and A^T . A are additions with small integer weights, done here
separably (rows, then columns) on channels-last tensors so that every elementwise step
runs over contiguous runs of channels.

Arithmetic: float32 rounding differs from a direct convolution's by about 1e-5 of the
output's scale (the transforms' weights reach 5; G holds 1/6 and 1/24); the encoder's
golden vectors hold within their 1e-4 tolerance on the tiny model
(tests/mucodec/encoder/test_golden.py; 7e-6 when measured once by hand).

Memory: the image is processed in strips of `strip_tiles` tile columns, so the padded
input and the transformed tiles (2.25x the strip's input) stay in cache instead of 2.25x
the whole image.
"""

from __future__ import annotations

import torch
from torch import Tensor

TILE = 4  # output pixels per tile side
SPAN = TILE + 2  # input pixels per tile side (3x3 kernel)

# G: kernel transform for F(4, 3) at the interpolation points 0, +-1, +-2 and infinity.
_KERNEL_TRANSFORM = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)


def winograd_kernels(weight: Tensor) -> Tensor:
    """Transforms 3x3 kernels into the 36 matrices of F(4x4, 3x3).

    Args:
        weight: [C_out, C_in, 3, 3] convolution weight.

    Returns:
        [36, C_in, C_out] U with U[6i + j] = (G g G^T)[i, j], contiguous, weight's dtype.
    """
    # In float64: 1/6 and 1/24 rounded to float32 would add their error to the transform's.
    g = torch.tensor(_KERNEL_TRANSFORM, dtype=torch.float64, device=weight.device)
    u = g @ weight.to(torch.float64) @ g.T  # [C_out, C_in, 6, 6]
    u = u.permute(2, 3, 1, 0).reshape(SPAN * SPAN, weight.shape[1], weight.shape[0])
    return u.to(weight.dtype).contiguous()


def _input_transform(d: list[Tensor], out: list[Tensor] | Tensor) -> None:
    """out[i] = (B^T d)[i] for six equally shaped slices d[0..5] along one tile axis."""
    d0, d1, d2, d3, d4, d5 = d
    t1 = torch.add(d4, d2, alpha=-4)
    t2 = torch.add(d3, d1, alpha=-4)
    t3 = d4 - d2
    t4 = (d3 - d1).mul_(2)
    torch.add(d4, d0, alpha=4, out=out[0]).add_(d2, alpha=-5)
    torch.add(t1, t2, out=out[1])
    torch.sub(t1, t2, out=out[2])
    torch.add(t3, t4, out=out[3])
    torch.sub(t3, t4, out=out[4])
    torch.add(d5, d1, alpha=4, out=out[5]).add_(d3, alpha=-5)


def _output_transform(m: list[Tensor], out: list[Tensor]) -> None:
    """out[i] = (A^T m)[i] for six equally shaped slices m[0..5] along one tile axis."""
    m0, m1, m2, m3, m4, m5 = m
    sum12, diff12 = m1 + m2, m1 - m2
    sum34, diff34 = m3 + m4, m3 - m4
    torch.add(m0, sum12, out=out[0]).add_(sum34)
    torch.add(diff12, diff34, alpha=2, out=out[1])
    torch.add(sum12, sum34, alpha=4, out=out[2])
    torch.add(diff12, diff34, alpha=8, out=out[3]).add_(m5)


def winograd_conv3x3(
    x: Tensor, kernels: Tensor, bias: Tensor | None = None, strip_tiles: int = 8
) -> Tensor:
    """A 3x3 convolution, stride 1, zero padding 1, on channels-last images.

    Args:
        x: [N, H, W, C_in] (any H, W >= 1).
        kernels: [36, C_in, C_out] from `winograd_kernels`.
        bias: [C_out] or None.
        strip_tiles: Tile columns (of 4 pixels) transformed at a time.

    Returns:
        [N, H, W, C_out], equal to `F.conv2d(x as NCHW, weight, bias, padding=1)` as NHWC
        up to float rounding.
    """
    batch, height, width, _ = x.shape
    c_out = kernels.shape[-1]
    tiles_h, tiles_w = -(-height // TILE), -(-width // TILE)
    out = x.new_empty(batch, tiles_h, TILE, tiles_w, TILE, c_out)  # [N, tH, 4, tW, 4, K]
    for first in range(0, tiles_w, strip_tiles):
        last = min(tiles_w, first + strip_tiles)
        strip = _padded_strip(x, first, last, tiles_h)
        _convolve_strip(strip, kernels, out[:, :, :, first:last])
    out = out.reshape(batch, TILE * tiles_h, TILE * tiles_w, c_out)[:, :height, :width]
    return out if bias is None else out.add_(bias)


def _padded_strip(x: Tensor, first: int, last: int, tiles_h: int) -> Tensor:
    """The input under tile columns [first, last) with its zero border.

    One pixel of zeros around the image and zeros up to whole tiles, made strip by strip
    so that the copy is still in cache when the transform reads it.

    Returns:
        [N, 4 tH + 2, 4 (last - first) + 2, C]; its column c is image column 4 first + c - 1.
    """
    batch, height, width, channels = x.shape
    strip = x.new_zeros(batch, TILE * tiles_h + 2, TILE * (last - first) + 2, channels)
    begin, end = max(TILE * first - 1, 0), min(TILE * last + 1, width)
    offset = begin - (TILE * first - 1)
    strip[:, 1 : height + 1, offset : offset + end - begin] = x[:, :, begin:end]
    return strip


def _convolve_strip(strip: Tensor, kernels: Tensor, out: Tensor) -> None:
    """One strip of tile columns: transform, 36 GEMMs, transform back into `out`.

    Args:
        strip: [N, 4 tH + 2, 4 tW + 2, C_in] padded input of tW tile columns.
        kernels: [36, C_in, C_out].
        out: [N, tH, 4, tW, 4, C_out] view to write the strip's output tiles into.
    """
    batch, tiles_h, _, tiles_w, _, c_out = out.shape
    c_in = strip.shape[-1]
    # B^T d B: along the rows (stride-4 row slices), then along the columns; each pass is
    # one call over all six rows or columns (few large operations, not many small ones).
    rows = strip.new_empty(SPAN, batch, tiles_h, strip.shape[2], c_in)
    _input_transform([strip[:, i : i + TILE * tiles_h : TILE] for i in range(SPAN)], rows)
    tiles = strip.new_empty(SPAN, SPAN, batch, tiles_h, tiles_w, c_in)
    _input_transform(
        [rows[..., j : j + TILE * tiles_w : TILE, :] for j in range(SPAN)],
        [tiles[:, j] for j in range(SPAN)],
    )
    # The 36 products, each summed over input channels: [36, tiles, C_in] x [36, C_in, C_out].
    products = torch.bmm(tiles.reshape(SPAN * SPAN, -1, c_in), kernels)
    products = products.reshape(SPAN, SPAN, batch, tiles_h, tiles_w, c_out)
    # A^T m A: along the columns, then along the rows straight into the output pixels.
    columns = strip.new_empty(SPAN, TILE, batch, tiles_h, tiles_w, c_out)
    _output_transform([products[:, j] for j in range(SPAN)], [columns[:, j] for j in range(TILE)])
    _output_transform(list(columns), [out[:, :, i].permute(3, 0, 1, 2, 4) for i in range(TILE)])
