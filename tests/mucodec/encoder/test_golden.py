"""Golden parity of the encoder side with the official MuCodec code (tiny weights).

Every vector in `shared/golden/encoder/` is checked: codes exactly, tensors within the
tolerances its README suggests. The FFT's rounding depends on the CPU's vector units (the
golden was recorded without AVX-512), so the mel features are compared where the README's
"different FFT" tier says they are meaningful, and each encoder stage is fed the golden
features of the stage before it, so its own tolerance does not absorb the FFT's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from mucodec.encoder.config import tiny
from mucodec.encoder.frontend import peak_divisor
from mucodec.encoder.tiling import sound2code_output_len, sound2code_windows
from mucodec.encoder.tokenizer import MuCodecTokenizer
from tests.mucodec.conftest import golden_tokenizer

pytestmark = pytest.mark.golden

HIDDEN_ATOL = 1e-4  # conv_out, layer_results, block steps, from the golden features
WAVE_ATOL = 1e-6  # wav24k: no FFT involved
AUDIBLE_DB = -60.0  # mel bins compared: quieter ones are float32 FFT noise (README)
MEL_DB_ATOL = 1e-2  # dB, README "different FFT" tier
END_TO_END_ATOL = 1e-2  # embeddings from raw audio, README "different FFT" tier


def _close(actual: Tensor, expected: Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def test_front_end_matches(tiny_tokenizer: MuCodecTokenizer, golden_inputs, golden_outputs) -> None:
    audio = golden_inputs["input_a"]
    frontend = tiny_tokenizer.frontend

    divisors = peak_divisor(audio.abs().amax(-1), frontend.config.segment_peak_threshold)
    out = frontend(audio[None])

    assert torch.equal(divisors, golden_outputs["peak_norm_divisor"])
    assert torch.equal(frontend.resampler.kernel, golden_outputs["resample_kernel"])
    _close(out.wav24k, golden_outputs["wav24k"], WAVE_ATOL)
    audible = golden_outputs["mel_db"] > AUDIBLE_DB
    assert audible.float().mean() > 0.5  # The check below covers most of the spectrogram.
    _close(out.mel_db[audible], golden_outputs["mel_db"][audible], MEL_DB_ATOL)
    audible = audible[..., : out.features.shape[-1]]  # The features drop the last frame.
    mel_norm_atol = MEL_DB_ATOL / frontend.config.mel_std
    _close(out.features[audible], golden_outputs["mel_norm"][audible], mel_norm_atol)
    assert out.frame_lengths.tolist() == [600]


@pytest.mark.parametrize("winograd", [True, False], ids=["winograd", "reference"])
def test_every_hidden_state_matches(
    encoder_golden: Path, golden_inputs, golden_outputs, winograd: bool
) -> None:
    # output_layer 3 = the last hidden state: all 3 blocks plus the final LayerNorm.
    config = dataclasses.replace(
        tiny(), encoder=dataclasses.replace(tiny().encoder, output_layer=3)
    )
    tokenizer = golden_tokenizer(encoder_golden, config)
    assert tokenizer.encoder.final_norm is not None
    subsampling = tokenizer.encoder.subsampling
    subsampling.use_winograd = winograd
    features = golden_outputs["mel_norm"]

    with torch.inference_mode():  # inference: the road the tokenizer takes
        assert subsampling._takes_fast_road(features) == winograd
        out = tokenizer.encoder(features, return_all=True)

    assert len(out.layer_results) == 4
    _close(out.layer_results[0], golden_outputs["conv_out"], HIDDEN_ATOL)
    for i, hidden in enumerate(out.layer_results):
        _close(hidden, golden_outputs[f"layer_results.{i}"], HIDDEN_ATOL)
    _close(out.hidden, golden_outputs["layer_results.3"], HIDDEN_ATOL)


def test_block_steps_match(tiny_tokenizer: MuCodecTokenizer, golden_inputs, golden_outputs) -> None:
    block = tiny_tokenizer.encoder.blocks[0]
    seen: dict[str, Tensor] = {}

    def keep(name: str, use_input: bool = False):
        def hook(module, args, output):
            seen[name] = (args[0] if use_input else output)[:, :40]

        return hook

    handles = [
        block.ffn1.register_forward_hook(keep("after_ffn1")),
        block.attention.linear_q.register_forward_hook(keep("rotary_qk_input", True)),
        block.attention.register_forward_hook(keep("after_attention")),
        block.conv.register_forward_hook(keep("after_conv_module")),
        block.ffn2.register_forward_hook(keep("after_ffn2")),
    ]
    try:
        tiny_tokenizer.encoder(golden_outputs["mel_norm"])
    finally:
        for handle in handles:
            handle.remove()

    assert len(seen) == len(handles)
    for name, value in seen.items():
        _close(value, golden_outputs[f"block0.{name}"], HIDDEN_ATOL)


def test_tokens_of_input_a(tiny_tokenizer: MuCodecTokenizer, golden_inputs, golden_outputs) -> None:
    codes = tiny_tokenizer.encode_segments([golden_inputs["input_a"]])[0]

    assert codes.shape == (1, 150)
    assert torch.equal(codes, golden_outputs["codes"][0])


def test_fetch_codes_batch_windows(
    tiny_tokenizer: MuCodecTokenizer, encoder_golden: Path, golden_inputs, golden_encode
) -> None:
    spec = json.loads((encoder_golden / "mucodec_encode_tiny_config.json").read_text())
    case = spec["windows_case"]
    audio = golden_inputs[case["source"]]
    windows = torch.stack([audio[:, o : o + case["length"]] for o in case["offsets"]])

    divisors = peak_divisor(windows.abs().amax(-1), 0.9)
    out = tiny_tokenizer.encode_padded(windows, return_embeddings=True)

    assert torch.equal(divisors, golden_encode["windows.peak_norm_divisor"])
    assert torch.equal(out.codes, golden_encode["windows.codes"])
    _close(out.embeddings.transpose(1, 2), golden_encode["windows.emb"], END_TO_END_ATOL)


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_sound2code(
    tiny_tokenizer: MuCodecTokenizer,
    encoder_golden: Path,
    golden_inputs,
    golden_encode,
    case: str,
) -> None:
    tiling = json.loads((encoder_golden / "mucodec_encode_tiny_config.json").read_text())["tiling"]
    song = golden_inputs["input_a"].repeat(1, 22) if case == "c" else golden_inputs[f"input_{case}"]
    assert song.shape[-1] == tiling[case]["orig_samples"]

    result = tiny_tokenizer.encode_song(song, return_embeddings=case != "c")

    assert result.num_windows == tiling[case]["windows"]
    assert result.codes.shape == (1, tiling[case]["output_len"])
    assert torch.equal(result.codes[None], golden_encode[f"sound2code.{case}.codes"])
    untruncated = golden_encode[f"sound2code.{case}.codes_untruncated"]
    assert torch.equal(result.codes_untruncated[None], untruncated)
    if case != "c":
        emb = golden_encode[f"sound2code.{case}.emb_kept"]
        _close(result.embeddings.T[None], emb, END_TO_END_ATOL)


def test_sound2code_lengths_and_window_counts(encoder_golden: Path) -> None:
    spec = json.loads((encoder_golden / "mucodec_encode_tiny_config.json").read_text())
    for case in spec["sound2code_length_cases"]["cases"]:
        samples = case["samples"]
        assert sound2code_output_len(samples) == case["output_len"], samples
        assert sound2code_windows(torch.zeros(2, samples)).shape[0] == case["windows"], samples
    for facts in spec["tiling"].values():
        windows = sound2code_windows(torch.zeros(1, facts["orig_samples"]))
        assert windows.shape == (facts["windows"], 1, facts["window_samples"])


def test_sound2code_on_a_very_short_song(tiny_tokenizer: MuCodecTokenizer) -> None:
    # 1920 samples double exactly to 3,932,160: three windows, and 2 tokens kept.
    song = torch.sin(torch.arange(1920.0) / 7.0).repeat(2, 1) * 0.3

    result = tiny_tokenizer.encode_song(song)

    assert result.num_windows == 3
    assert result.codes.shape == (1, 2)
