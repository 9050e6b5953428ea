"""Padding invariance: a segment's tokens do not depend on what it is batched with."""

from __future__ import annotations

import torch

from mucodec.encoder.tokenizer import MuCodecTokenizer


def _song(seconds: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    samples = int(seconds * 48000)
    t = torch.arange(samples) / 48000.0
    tone = torch.sin(2 * torch.pi * 220.0 * t) * 0.4
    noise = torch.randn(2, samples, generator=generator) * 0.05
    return tone + noise


def test_short_segment_in_a_padded_batch_equals_alone(tiny_tokenizer: MuCodecTokenizer) -> None:
    full, short = _song(3.0, seed=1), _song(1.3, seed=2)
    audio = torch.zeros(2, 2, full.shape[-1])
    audio[0], audio[1, :, : short.shape[-1]] = full, short
    audio[1, :, short.shape[-1] :] = 0.7  # padding content must not matter

    batch = tiny_tokenizer.encode_padded(
        audio, [full.shape[-1], short.shape[-1]], return_embeddings=True
    )
    alone_short = tiny_tokenizer.encode_padded(short[None], return_embeddings=True)
    alone_full = tiny_tokenizer.encode_padded(full[None], return_embeddings=True)

    frames = short.shape[-1] // 1920
    assert batch.lengths.tolist() == [full.shape[-1] // 1920, frames]
    assert torch.equal(batch.codes[1, :, :frames], alone_short.codes[0])
    assert (batch.codes[1, :, frames:] == -1).all()
    assert torch.equal(batch.codes[0], alone_full.codes[0])
    torch.testing.assert_close(
        batch.embeddings[1, :frames], alone_short.embeddings[0], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(batch.embeddings[0], alone_full.embeddings[0], atol=1e-4, rtol=0)


def test_encode_segments_matches_one_by_one(tiny_tokenizer: MuCodecTokenizer) -> None:
    segments = [_song(s, seed=i) for i, s in enumerate((2.0, 0.5, 1.04))]

    together = tiny_tokenizer.encode_segments(segments)

    for segment, codes in zip(segments, together, strict=True):
        assert codes.shape == (1, segment.shape[-1] // 1920)
        assert torch.equal(codes, tiny_tokenizer.encode_segments([segment])[0])


def test_batch_of_equal_segments_equals_alone(tiny_tokenizer: MuCodecTokenizer) -> None:
    audio = torch.stack([_song(1.0, seed=s) for s in range(3)])

    batch = tiny_tokenizer.encode_padded(audio)

    for i in range(3):
        assert torch.equal(batch.codes[i], tiny_tokenizer.encode_segments([audio[i]])[0])
