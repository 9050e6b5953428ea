"""Every tensor of both tiny golden sets, within the README's tolerances.

Codes, frame counts and frame lengths exact; scales rtol 1e-6; decodes and the quantiser
input atol 1e-5; quantiser decodes atol 1e-6 (README "Tolerances").
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from audio_codecs.encodec.coding import decode_frames, encode_frames, quantize
from audio_codecs.encodec.config import codebooks_for_bandwidth
from audio_codecs.encodec.signal import chunk_scale
from tests.audio_codecs.encodec.conftest import GoldenModel

_CASE_BW = r"(?P<case>(?:mono|stereo)_\w)\.bw(?P<bw>[\d.]+)"
_FRAME = re.compile(_CASE_BW + r"\.frame(?P<i>\d+)\.(?P<part>codes|scale)")
_DECODE = re.compile(_CASE_BW + r"\.decode")
_QUANTIZER = re.compile(r"quantizer\.bw(?P<bw>[\d.]+)\.(?P<part>codes|decode)")
_BATCH = re.compile(r"batch\.(?:alone(?P<j>\d)\.)?frame(?P<i>\d+)\.(?P<part>codes|scale)")
_ATOL = {"decode": 1e-5, "quantizer.input": 1e-5, "quantizer.decode": 1e-6}


def _embeddings(g: GoldenModel) -> Tensor:
    """`model.encoder(x)` of the quantiser case (48 kHz: divided by its scale first)."""
    case = "mono_a" if g.name == "24k" else "stereo_a"
    audio = g.inputs[case][None]
    if g.config.normalize:
        audio = audio / chunk_scale(audio)
    with torch.no_grad():
        return g.model.encoder(audio)


def _batch_frames(g: GoldenModel, alone: str | None):
    """Frames of the padded two-item batch, or of item `alone` by itself."""
    n_q = codebooks_for_bandwidth(g.config, g.cases["cases"]["batch"]["bandwidth"])
    items = [g.inputs["batch0"], g.inputs["batch1"]]
    if alone is not None:
        audio = items[int(alone)][None]
    else:
        width = max(x.shape[-1] for x in items)
        audio = torch.stack([torch.nn.functional.pad(x, (0, width - x.shape[-1])) for x in items])
    return encode_frames(g.model, g.config, audio, n_q)


def ours(g: GoldenModel, key: str) -> tuple[Tensor, str]:
    """Our tensor for golden `key`, and the kind of comparison it needs."""
    if m := _FRAME.fullmatch(key):
        frame = g.frames(m["case"], m["bw"])[int(m["i"])]
        return (frame.codes, "exact") if m["part"] == "codes" else (frame.scale[:, None], "scale")
    if m := _DECODE.fullmatch(key):
        return decode_frames(g.model, g.config, g.frames(m["case"], m["bw"])), "decode"
    if key == "quantizer.input":
        return _embeddings(g), key
    if m := _QUANTIZER.fullmatch(key):
        codes = quantize(g.model, _embeddings(g), codebooks_for_bandwidth(g.config, float(m["bw"])))
        if m["part"] == "codes":
            return codes, "exact"
        with torch.no_grad():
            return g.model.quantizer.decode(codes), "quantizer.decode"
    if m := _BATCH.fullmatch(key):
        frame = _batch_frames(g, m["j"])[int(m["i"])]
        return (frame.codes, "exact") if m["part"] == "codes" else (frame.scale[:, None], "scale")
    raise KeyError(f"no rule for golden tensor {key!r}")


def _problems(g: GoldenModel, keys: list[str]) -> list[str]:
    """Every key whose tensor is off, with the numbers."""
    problems = []
    for key in keys:
        want = g.outputs[key]
        got, kind = ours(g, key)
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{key}: shape {tuple(got.shape)} vs {tuple(want.shape)}")
        elif kind == "exact":
            if not torch.equal(got, want):
                problems.append(f"{key}: {(got != want).sum().item()} codes differ")
        elif kind == "scale":
            if not torch.allclose(got, want, rtol=1e-6, atol=0):
                problems.append(f"{key}: scale {got.tolist()} vs {want.tolist()}")
        else:
            err = (got - want).abs().max().item()
            if err > _ATOL[kind]:
                problems.append(f"{key}: max abs error {err:.3g} > {_ATOL[kind]}")
    return problems


def _keys(g: GoldenModel, pattern: str) -> list[str]:
    keys = [k for k in g.outputs if re.fullmatch(pattern, k)]
    assert keys, pattern
    return keys


def test_every_golden_tensor_has_a_rule(golden_model: GoldenModel) -> None:
    for key in golden_model.outputs:
        ours(golden_model, key)  # Raises for a tensor no test compares.


def test_frame_codes_and_scales(golden_model: GoldenModel) -> None:
    assert _problems(golden_model, _keys(golden_model, r"(mono|stereo)_\w\..*frame.*")) == []


def test_decodes(golden_model: GoldenModel) -> None:
    assert _problems(golden_model, _keys(golden_model, r"(mono|stereo)_\w\..*\.decode")) == []


def test_quantizer_input_codes_and_decodes(golden_model: GoldenModel) -> None:
    assert _problems(golden_model, _keys(golden_model, r"quantizer\..*")) == []


def test_batch_and_alone(golden_model: GoldenModel) -> None:
    assert _problems(golden_model, _keys(golden_model, r"batch\..*")) == []


def test_case_facts(golden_model: GoldenModel) -> None:
    """Frame counts and lengths, codebooks per bandwidth (None = all), decode shapes."""
    g = golden_model
    for name, case in g.cases["cases"].items():
        if name in ("quantizer", "batch"):
            continue
        for bw, facts in case["bandwidths"].items():
            bandwidth = g.config.target_bandwidths[-1] if bw == "none" else float(bw)
            assert codebooks_for_bandwidth(g.config, bandwidth) == facts["n_codebooks"]
            frames = g.frames(name, f"{bandwidth:g}")
            assert [f.codes.shape[-1] for f in frames] == facts["frame_lengths"]
            assert all(f.codes.shape[1] == facts["n_codebooks"] for f in frames)
            if "decode_shape" in facts:
                decoded = decode_frames(g.model, g.config, frames)
                assert list(decoded.shape) == facts["decode_shape"]
    batch = g.cases["cases"]["batch"]
    assert len(_batch_frames(g, None)) == batch["n_frames"]
    for j, alone in enumerate(batch["alone"]):
        lengths = [f.codes.shape[-1] for f in _batch_frames(g, str(j))]
        assert lengths == [f["length"] for f in alone["frames"]]
