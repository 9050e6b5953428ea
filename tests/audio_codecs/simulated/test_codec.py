"""The simulated codec: a device of a set speed that uses no CPU, and codes of a real shape."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from audio_codecs.dac.codec import CHANNELS as DAC_CHANNELS
from audio_codecs.dac.config import preset as dac_preset
from audio_codecs.encodec.config import codebooks_for_bandwidth
from audio_codecs.encodec.config import preset as encodec_preset
from audio_codecs.simulated.codec import PRESETS
from core.errors import InvalidSetting, UsageError
from mucodec.encoder.config import preset as mucodec_preset

CPU = torch.device("cpu")


def simulated(preset: str = "mucodec", **options: str):
    return registry.load_codec(
        CodecSpec("simulated", preset=preset, options=tuple(options.items())), CPU
    )


def pcm(seconds: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-3000, 3000, (round(seconds * 48_000), 2), generator=generator,
                         dtype=torch.int16)  # fmt: skip


def test_each_preset_has_the_code_shape_of_the_real_full_size_model():
    mucodec = mucodec_preset("official")
    dac = dac_preset("44khz_8kbps")
    encodec = encodec_preset("48khz")
    real = {
        "mucodec": (mucodec.frontend.token_rate, 1, mucodec.quantizer.n_codebooks, 16384),
        "dac": (dac.frame_rate, DAC_CHANNELS, dac.n_codebooks, dac.codebook_size),
        "encodec": (encodec.frame_rate, 1,
                    codebooks_for_bandwidth(encodec, encodec.target_bandwidths[-1]), encodec.bins),
    }  # fmt: skip
    for name, (rate, channels, books, size) in real.items():
        shape = PRESETS[name]
        assert (shape.frame_rate, shape.channels, shape.num_codebooks) == (rate, channels, books)
        assert shape.codebook_size == size


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_codes_are_shaped_like_the_real_codec_and_depend_on_the_audio(name: str):
    codec = simulated(name)
    info = codec.info
    first, second = codec.encode_pcm16([pcm(35.84, 0), pcm(35.84, 1)], gains=[1.0, 1.0])
    frames = math.ceil(round(35.84 * 48_000) * info.frame_rate / 48_000)
    assert first.codes.shape == (info.channels * info.num_codebooks, frames)
    assert first.codes.dtype == np.uint16 and first.codes.max() < info.codebook_size
    assert not np.array_equal(first.codes, second.codes)
    (again,) = codec.encode_pcm16([pcm(35.84, 0)])
    assert np.array_equal(
        first.codes, again.codes
    )  # Deterministic: the same shard, the same table.
    (floats,) = codec.encode([torch.zeros(2, 48_000)])
    assert floats.codes.shape[-1] == math.ceil(info.frame_rate)


def test_the_device_holds_each_segment_without_using_the_cpu():
    codec = simulated(device_ms="40")
    wall, cpu = time.perf_counter(), time.process_time()
    codec.encode_pcm16([pcm(1.0, seed) for seed in range(5)])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= 0.2  # 5 segments x 40 ms.
    assert cpu < wall / 4


def test_two_calls_at_once_take_turns_on_the_one_device():
    codec = simulated(device_ms="60")
    started = time.perf_counter()
    calls = [threading.Thread(target=codec.encode_pcm16, args=([pcm(1.0, i)],)) for i in range(2)]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    assert time.perf_counter() - started >= 0.12


@pytest.mark.parametrize(
    "spec, match",
    [
        (CodecSpec("simulated", preset="mucodec", options=(("device_ms", "-1"),)), "device_ms"),
        (CodecSpec("simulated", preset="mucodec", options=(("device_ms", "fast"),)), "device_ms"),
        (CodecSpec("simulated", preset="mucodec", options=(("speed", "1"),)), "unknown option"),
        (CodecSpec("simulated", checkpoint="/some/dir"), "no weights"),
    ],
)
def test_bad_settings_are_refused(spec: CodecSpec, match: str):
    with pytest.raises(InvalidSetting, match=match):
        registry.load_codec(spec, CPU)


def test_it_decodes_nothing_and_converts_nothing(tmp_path):
    codec = simulated()
    (encoded,) = codec.encode_pcm16([pcm(1.0, 0)])
    with pytest.raises(InvalidSetting, match="no audio"):
        codec.decode([encoded])
    with pytest.raises(UsageError, match="no weights"):
        registry.plugin("simulated").convert_checkpoint({}, tmp_path, None)


def test_only_asked_for_among_the_codecs():
    # The demo, the spot-check and "every codec" defaults never run a stand-in.
    assert "simulated" not in registry.codecs()
    assert "simulated" in registry.codecs(simulated=True)
    assert registry.simulates_device("simulated") and not registry.simulates_device("mucodec")
