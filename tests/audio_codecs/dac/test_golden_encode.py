"""Every tensor of the official entry points, reproduced on DacModel (README tolerances)."""

from __future__ import annotations

import pytest
import torch

from audio_codecs.dac.model import decode, decode_codes, encode, preprocess
from audio_codecs.dac.quantize import from_codes
from tests.audio_codecs.dac.conftest import GoldenSet

Z_ATOL, LATENT_ATOL, AUDIO_ATOL, LOSS_RTOL = 1e-5, 5e-5, 5e-5, 1e-5


def _mono(golden: GoldenSet, name: str) -> torch.Tensor:
    return golden.inputs[name][None, None]  # [1, 1, n]


@pytest.mark.parametrize("name", ["mono_a", "mono_b"])
@torch.no_grad()
def test_mono_encode_from_codes_and_decode(golden_set: GoldenSet, name: str) -> None:
    out, hop = golden_set.outputs, golden_set.config.hop
    x = preprocess(_mono(golden_set, name), hop)
    assert torch.equal(x, out[f"{name}.preprocess"])

    q = encode(golden_set.model, x)
    assert torch.equal(q.codes, out[f"{name}.encode.codes"])
    torch.testing.assert_close(q.z, out[f"{name}.encode.z"], atol=Z_ATOL, rtol=0)
    torch.testing.assert_close(q.latents, out[f"{name}.encode.latents"], atol=LATENT_ATOL, rtol=0)
    for loss in ("commitment_loss", "codebook_loss"):
        want = out[f"{name}.encode.{loss}"]
        torch.testing.assert_close(getattr(q, loss).reshape(1), want, rtol=LOSS_RTOL, atol=0)

    z, rows = from_codes(golden_set.model.quantizer, q.codes)
    assert torch.equal(rows, out[f"{name}.from_codes.latents"])
    torch.testing.assert_close(z, out[f"{name}.from_codes.z"], atol=Z_ATOL, rtol=0)

    audio = decode(golden_set.model, q.z)
    assert audio.shape[-1] == golden_set.cases["cases"][name]["decoded_length"]
    torch.testing.assert_close(audio, out[f"{name}.decode"], atol=AUDIO_ATOL, rtol=0)


@torch.no_grad()
def test_mono_b_nq2_from_codes_decode_and_forward(golden_set: GoldenSet) -> None:
    out, model = golden_set.outputs, golden_set.model
    x = _mono(golden_set, "mono_b")
    padded = preprocess(x, golden_set.config.hop)

    q2 = encode(model, padded, n_quantizers=2)
    assert torch.equal(q2.codes, out["mono_b.encode_nq2.codes"])
    assert torch.equal(q2.codes, out["mono_b.encode.codes"][:, :2])
    torch.testing.assert_close(q2.z, out["mono_b.encode_nq2.z"], atol=Z_ATOL, rtol=0)
    torch.testing.assert_close(
        q2.latents, out["mono_b.encode_nq2.latents"], atol=LATENT_ATOL, rtol=0
    )

    from_code_audio = decode_codes(model, out["mono_b.encode.codes"])
    torch.testing.assert_close(
        from_code_audio, out["mono_b.decode_from_codes"], atol=AUDIO_ATOL, rtol=0
    )

    # The official forward: decode(encode(preprocess(x)).z)[..., :n].
    forward = decode(model, encode(model, padded).z)[..., : x.shape[-1]]
    assert forward.shape[-1] == golden_set.cases["cases"]["mono_b"]["forward_length"]
    torch.testing.assert_close(forward, out["mono_b.forward.audio"], atol=AUDIO_ATOL, rtol=0)


@torch.no_grad()
def test_batch_and_each_signal_alone(golden_set: GoldenSet) -> None:
    out, model, hop = golden_set.outputs, golden_set.model, golden_set.config.hop
    signals = [golden_set.inputs["batch0"], golden_set.inputs["batch1"]]
    length = golden_set.cases["cases"]["batch"]["padded_length"]
    batch = torch.stack([torch.nn.functional.pad(s, (0, length - s.shape[-1])) for s in signals])
    batch = preprocess(batch[:, None], hop)  # [2, 1, L]
    assert batch.shape[-1] == length

    q = encode(model, batch)
    assert torch.equal(q.codes, out["batch.encode.codes"])
    torch.testing.assert_close(q.z, out["batch.encode.z"], atol=Z_ATOL, rtol=0)
    torch.testing.assert_close(q.latents, out["batch.encode.latents"], atol=LATENT_ATOL, rtol=0)
    torch.testing.assert_close(decode(model, q.z), out["batch.decode"], atol=AUDIO_ATOL, rtol=0)

    for index, signal in enumerate(signals):
        alone = encode(model, preprocess(signal[None, None], hop)).codes
        assert torch.equal(alone, out[f"batch.alone{index}.codes"])
    # The official encode has no mask: padding changes the codes near the end of item 1.
    differs = golden_set.cases["cases"]["batch"]["alone"][1]["first_frame_differing_from_batch"]
    alone1 = out["batch.alone1.codes"]
    assert torch.equal(alone1[..., :differs], q.codes[1:, :, :differs])
    assert not torch.equal(alone1[..., differs], q.codes[1:, :, differs])
