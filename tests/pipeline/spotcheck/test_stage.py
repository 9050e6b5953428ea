"""The spot-check: sampling, metrics, the stage on Ray, and the report in a real browser."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from audio_codecs.mucodec.decoding import DecoderSpec
from core.errors import OutputInUse
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.config import WindowConfig, decoder_preset, with_codebooks
from mucodec.encoder.config import preset
from pipeline.spotcheck.metrics import (
    integrated_loudness,
    reconstruction_metrics,
    si_sdr,
)
from pipeline.spotcheck.report import render_report
from pipeline.spotcheck.stage import (
    SpotcheckConfig,
    choose_keys,
    read_metrics,
    sample_keys,
    spotcheck,
)
from schemas.metrics import METRICS_SCHEMA
from testing.synth import synth_song
from tests.pipeline.helpers import open_in_chromium

# A 64-code window (2.56 s) holds a 2 s segment: the decoder renders whole windows, and the
# default 40.96 s one would cost ~20 s per segment on a CPU.
TINY_DECODER = DecoderSpec(preset="tiny", steps=2, seed=0, window_codes=64)


def test_choose_keys_is_seeded_and_covers_songs_before_repeating_one():
    index = [(f"s{song}_{i:05d}", f"s{song}") for song in range(5) for i in range(song + 1)]
    first = choose_keys(index, 4, seed=1)
    assert first == choose_keys(list(reversed(index)), 4, seed=1)
    assert len({key.split("_")[0] for key in first}) == 4
    assert choose_keys(index, 4, seed=2) != first
    everything = choose_keys(index, 100, seed=0)
    assert Counter(everything) == Counter(key for key, _ in index)


def test_every_codec_gets_the_same_keys_chosen_from_those_all_tables_hold():
    index = [(f"s{song}_{i:05d}", f"s{song}") for song in range(4) for i in range(3)]
    indexes = {"mucodec": index, "dac": index[2:], "encodec": index[:-2]}
    keys, shared = sample_keys(indexes, 5, None, seed=3)
    assert shared == len(index) - 4 and len(keys) == 5
    assert keys == choose_keys(index[2:-2], 5, seed=3)
    assert sample_keys(dict(reversed(indexes.items())), 5, None, seed=3)[0] == keys
    assert len(sample_keys(indexes, None, 0.5, seed=3)[0]) == 4


def test_metrics_are_zero_for_a_perfect_copy_and_track_gain():
    audio = torch.from_numpy(synth_song(3.0, 48_000, 2, seed=0).T.copy())
    perfect = reconstruction_metrics(audio, audio)
    assert perfect["mel_distance"] == 0 and perfect["stft_distance"] == 0
    assert perfect["loudness_diff_lu"] == 0 and perfect["si_sdr_db"] > 100
    quieter = reconstruction_metrics(audio, 0.5 * audio)
    assert quieter["loudness_diff_lu"] == pytest.approx(20 * math.log10(0.5), abs=1e-6)
    assert quieter["si_sdr_db"] > 100  # Scale-invariant.
    assert quieter["mel_distance"] > 0.5
    noisy = audio + 0.05 * torch.randn_like(audio)
    assert 0 < si_sdr(audio, noisy) < 40


def test_integrated_loudness_matches_the_bs1770_reference_tone():
    """A 0 dBFS 997 Hz sine in one channel reads -3.01 LUFS (BS.1770-4, clause 2.7)."""
    t = torch.arange(48_000 * 5) / 48_000
    tone = torch.stack([torch.sin(2 * math.pi * 997 * t), torch.zeros_like(t)])
    assert integrated_loudness(tone) == pytest.approx(-3.01, abs=0.02)
    assert integrated_loudness(torch.zeros(2, 48_000)) == float("-inf")


@pytest.fixture(scope="module")
def tokenized(prepared_corpus, tokenized_corpus) -> dict[str, str]:
    """The session's tokenized corpus, as the spot-check reads it."""
    return {"prepared": prepared_corpus, "tokens": str(tokenized_corpus[0].parent)}


def decoding(spec: DecoderSpec, **sample) -> SpotcheckConfig:
    """The spot-check of MuCodec's tables with the decoder `spec`, and `sample`."""
    return SpotcheckConfig(decoders=(("mucodec", asdict(spec)),), **sample)


SPOTCHECK = decoding(TINY_DECODER, count=2, seed=0)


@pytest.fixture(scope="module")
def spotchecked(tokenized, tmp_path_factory):
    """One spot-check run shared by the tests below (decoding is the slow part on CPU)."""
    output = tmp_path_factory.mktemp("spotcheck-out")
    summary = spotcheck(tokenized["tokens"], tokenized["prepared"], str(output), SPOTCHECK)
    return output, summary


@pytest.mark.integration
def test_spotcheck_decodes_the_sample_and_writes_metrics_wavs_and_report(tokenized, spotchecked):
    output, summary = spotchecked
    assert (summary.sampled, summary.decoded_now, summary.missing) == (2, 2, [])
    assert summary.songs_sampled == 2

    metrics = read_metrics(str(output)).to_pylist()
    assert len(metrics) == 2
    tokens = {}
    for part in sorted(Path(tokenized["tokens"], "mucodec", "tokens").glob("*.parquet")):
        tokens.update({r["key"]: r for r in pq.read_table(part).to_pylist()})
    decoder = build_decoder(_tiny_decoder_for_tokens(), seed=TINY_DECODER.seed).eval()
    decoder.use_window(WindowConfig.of_length(TINY_DECODER.window_codes))
    assert {r["codec"] for r in metrics} == {"mucodec"} and summary.codecs == ["mucodec"]
    for number, record in enumerate(metrics):
        folder = output / "samples" / record["key"] / "mucodec"
        original, rate = sf.read(folder.parent / "original.wav", always_2d=True)
        reconstruction, _ = sf.read(folder / "reconstruction.wav", always_2d=True)
        assert rate == 48_000 and original.shape[1] == reconstruction.shape[1] == 2
        assert (folder / "spectrogram.png").read_bytes().startswith(b"\x89PNG")
        assert (folder.parent / "original.png").read_bytes().startswith(b"\x89PNG")
        assert record["bitrate_kbps"] > 0
        row = tokens[record["key"]]
        assert len(reconstruction) == 1920 * row["n_frames"]
        assert set(record) >= {"mel_distance", "stft_distance", "si_sdr_db", "loudness_diff_lu"}
        if number:
            continue
        # The WAV holds exactly what the decoder makes of these codes (16-bit rounding).
        codes = torch.tensor(row["codes"])[None]
        sampling = decoder.with_sampling(num_steps=2, guidance_scale=1.5)
        with torch.inference_mode():
            expected = decoder.decode(codes, seeds=[0], sampling=sampling)[0].clamp(-1, 1)
        np.testing.assert_allclose(reconstruction.T, expected.numpy(), atol=1 / 32768 + 1e-6)

    html = (output / "report.html").read_text()
    assert all(f"samples/{r['key']}/mucodec/spectrogram.png" in html for r in metrics)
    assert html.count("<audio") == 4

    again = spotcheck(tokenized["tokens"], tokenized["prepared"], str(output), SPOTCHECK)
    assert (again.decoded_now, again.already_done) == (0, 2)


def _tiny_decoder_for_tokens():
    quantizer = preset("tiny").quantizer
    return with_codebooks(decoder_preset("tiny"), quantizer.n_codebooks, quantizer.codebook_size)


@pytest.mark.integration
def test_the_report_renders_in_headless_chromium_without_errors(spotchecked, tmp_path):
    output, _ = spotchecked
    errors, images, audios = open_in_chromium(output / "report.html", tmp_path / "report.png")
    assert errors == []
    spectrograms = [i for i in images if i[0].endswith("mucodec/spectrogram.png")]
    assert len(spectrograms) == 2
    assert len([i for i in images if i[0].endswith("original.png")]) == 2
    assert len(audios) == 4
    assert all(complete and width > 100 for _, complete, width in images), images


def test_the_report_shows_three_codecs_side_by_side_in_chromium(tmp_path):
    """The report function alone, fed metrics and files of three codecs."""
    audio = torch.from_numpy(synth_song(1.0, 48_000, 2, seed=0).T.copy())
    codecs = {"mucodec": 1.5, "dac": 6.0, "encodec": 3.0}
    from pipeline.spotcheck.actor import wav_bytes
    from pipeline.spotcheck.spectrogram import mel_png

    records = []
    for key in ("a_00000", "b_00000"):
        folder = tmp_path / "samples" / key
        for codec, rate in codecs.items():
            (folder / codec).mkdir(parents=True)
            (folder / codec / "spectrogram.png").write_bytes(mel_png(audio * 0.5, codec))
            (folder / codec / "reconstruction.wav").write_bytes(wav_bytes(0.5 * audio.numpy()))
            records.append({"key": key, "codec": codec, "bitrate_kbps": rate,
                            "song_id": key[0], "segment_index": 0, "start_s": 0.0,
                            "duration_s": 1.0, "n_frames": 25, "mel_distance": rate / 10,
                            "stft_distance": 1.0, "si_sdr_db": -rate, "loudness_diff_lu": 0.1,
                            "decoder_steps": 0, "guidance_scale": 0.0})  # fmt: skip
        (folder / "original.png").write_bytes(mel_png(audio, key))
        (folder / "original.wav").write_bytes(wav_bytes(audio.numpy()))
    stats = {c: {"codebooks": [{"usage": 0.5, "efficiency": 0.4}] * 2} for c in codecs}
    page = render_report(records, {"run": "test"}, {**stats, "encodec": None})
    (tmp_path / "report.html").write_text(page)
    assert page.count("<tr><th>") >= 4  # One comparison row per codec (and the run fact).

    errors, images, audios = open_in_chromium(tmp_path / "report.html", tmp_path / "shot.png")
    assert errors == []
    for codec in codecs:
        assert len([i for i in images if i[0].endswith(f"{codec}/spectrogram.png")]) == 2
        assert len([a for a in audios if a.endswith(f"{codec}/reconstruction.wav")]) == 2
    assert len([i for i in images if i[0].startswith("data:image/png")]) == 3  # The plots.
    assert all(complete and width > 100 for _, complete, width in images)


@pytest.mark.integration
def test_a_rerun_with_other_decoder_settings_is_refused_unless_forced(
    tokenized, spotchecked, tmp_path
):
    output = tmp_path / "spotcheck"
    shutil.copytree(spotchecked[0], output)
    inputs = (tokenized["tokens"], tokenized["prepared"], str(output))
    claimed = json.loads((output / "_spotcheck" / "run.json").read_text())
    decoder = claimed["codecs"]["mucodec"]["decoder"]
    assert decoder["steps"] == 2 and claimed["tokens_url"] == tokenized["tokens"]
    other = decoding(replace(TINY_DECODER, steps=3), count=1, seed=0)
    with pytest.raises(OutputInUse, match=r"steps: 2 -> 3.*--force"):
        spotcheck(*inputs, other)
    assert len(list((output / "samples").iterdir())) == 2  # Nothing was touched.

    forced = spotcheck(*inputs, other, force=True)
    assert (forced.decoded_now, forced.already_done) == (1, 0)
    (sample,) = (output / "samples").iterdir()  # The old samples are gone.
    assert claimed["codecs"]["mucodec"]["preset"] == "tiny"
    assert json.loads((sample / "mucodec" / "metrics.json").read_text())["decoder_steps"] == 3
    claimed = json.loads((output / "_spotcheck" / "run.json").read_text())
    assert claimed["codecs"]["mucodec"]["decoder"]["steps"] == 3
    metrics = read_metrics(str(output))
    assert metrics.schema.equals(METRICS_SCHEMA) and metrics.num_rows == 1
    # The same settings again resume: nothing is decoded twice.
    again = spotcheck(*inputs, other)
    assert (again.decoded_now, again.already_done) == (0, 1)


@pytest.mark.integration
def test_a_rerun_with_another_set_of_codecs_is_refused_unless_forced(
    tokenized, spotchecked, tmp_path, monkeypatch
):
    """A second codec's tables appear (here: a copy of MuCodec's under another registered
    name); the claim names the codec set, so the rerun is refused before anything runs."""
    from audio_codecs import registry

    tokens = tmp_path / "tokens"
    shutil.copytree(Path(tokenized["tokens"], "mucodec"), tokens / "mucodec")
    shutil.copytree(Path(tokenized["tokens"], "mucodec"), tokens / "other")
    output = tmp_path / "spotcheck"
    shutil.copytree(spotchecked[0], output)
    run = json.loads((output / "_spotcheck" / "run.json").read_text())
    run["tokens_url"] = str(tokens)  # Only the codec set differs.
    (output / "_spotcheck" / "run.json").write_text(json.dumps(run))
    monkeypatch.setitem(registry.BUILT_IN, "other", "audio_codecs.mucodec")
    decoder = asdict(TINY_DECODER)
    both = SpotcheckConfig(decoders=(("mucodec", decoder), ("other", decoder)), count=2)
    with pytest.raises(OutputInUse, match=r"codecs: \['mucodec'\] -> \['mucodec', 'other'\]"):
        spotcheck(str(tokens), tokenized["prepared"], str(output), both)
