"""RVQ: golden parity with the official quantiser, and its invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mucodec.config import QuantizerConfig
from mucodec.quantizer import ResidualVectorQuantizer


def _golden_quantizer(encoder_golden: Path, name: str) -> ResidualVectorQuantizer:
    spec = json.loads((encoder_golden / "rvq_tiny_config.json").read_text())[name]
    config = QuantizerConfig(
        input_dim=spec["input_dim"],
        n_codebooks=spec["n_codebooks"],
        codebook_size=spec["codebook_size"],
        codebook_dim=spec["codebook_dim"],
    )
    quantizer = ResidualVectorQuantizer(config).eval()
    state = load_file(encoder_golden / f"rvq_tiny_{name}_state_dict.safetensors")
    quantizer.load_state_dict(state, strict=True)
    return quantizer


@pytest.mark.golden
@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("case", ["enc", "rand"])
def test_rvq_matches_official(encoder_golden: Path, name: str, case: str) -> None:
    quantizer = _golden_quantizer(encoder_golden, name)
    golden = load_file(encoder_golden / "rvq_tiny_cases.safetensors")
    prefix = f"{name}.{case}."

    result = quantizer(golden[f"input.{case}"])

    assert torch.equal(result.codes, golden[prefix + "codes"])
    torch.testing.assert_close(result.z_q, golden[prefix + "z_q"], atol=1e-4, rtol=0)
    torch.testing.assert_close(result.latents, golden[prefix + "latents"], atol=1e-4, rtol=0)
    from_codes = quantizer.from_codes(golden[prefix + "codes"])
    torch.testing.assert_close(from_codes, golden[prefix + "from_codes.z_q"], atol=1e-4, rtol=0)


def test_state_dict_keys_are_the_official_ones() -> None:
    quantizer = ResidualVectorQuantizer(QuantizerConfig(input_dim=8, n_codebooks=2))
    keys = set(quantizer.state_dict())
    for i in range(2):
        stage = f"quantizers.{i}."
        expected = {
            stage + "stale_counter",
            stage + "codebook.weight",
            *(
                stage + f"{proj}.{p}"
                for proj in ("in_proj", "out_proj")
                for p in ("weight_g", "weight_v", "bias")
            ),
        }
        assert expected <= keys
    assert len(keys) == 16


def test_from_codes_equals_forward_sum_and_prefix_stages() -> None:
    torch.manual_seed(0)
    config = QuantizerConfig(input_dim=16, n_codebooks=3, codebook_size=32, codebook_dim=4)
    quantizer = ResidualVectorQuantizer(config).eval()
    z = torch.randn(2, 16, 7)

    result = quantizer(z)

    assert result.codes.shape == (2, 3, 7)
    assert result.codes.dtype == torch.int64
    assert result.latents.shape == (2, 12, 7)
    torch.testing.assert_close(quantizer.from_codes(result.codes), result.z_q, atol=1e-5, rtol=0)
    one_stage = quantizer.from_codes(result.codes[:, :1])
    first = quantizer.quantizers[0]
    torch.testing.assert_close(one_stage, first.out_proj(first.embed(result.codes[:, 0])))
    with pytest.raises(ValueError, match="1 <= n <= 3"):
        quantizer.from_codes(torch.zeros(2, 4, 7, dtype=torch.long))


def test_codes_are_frame_independent_and_chunking_invariant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(1)
    config = QuantizerConfig(input_dim=16, n_codebooks=2, codebook_size=64, codebook_dim=8)
    quantizer = ResidualVectorQuantizer(config).eval()
    z = torch.randn(3, 16, 20)

    codes = quantizer.encode(z)
    monkeypatch.setattr("mucodec.quantizer._DISTANCE_ELEMENTS_PER_CHUNK", 64 * 5)

    assert torch.equal(quantizer.encode(z), codes)
    assert torch.equal(quantizer.encode(z[1:2, :, 4:11]), codes[1:2, :, 4:11])


def test_codes_are_float32_under_bf16_autocast() -> None:
    torch.manual_seed(2)
    quantizer = ResidualVectorQuantizer(
        QuantizerConfig(input_dim=16, n_codebooks=2, codebook_size=64, codebook_dim=8)
    ).eval()
    z = torch.randn(2, 16, 9)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = quantizer(z)

    assert result.z_q.dtype == torch.float32
    assert torch.equal(result.codes, quantizer.encode(z))
