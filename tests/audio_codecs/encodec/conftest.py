"""EnCodec test fixtures: the golden folder, the two tiny golden models, one CPU thread."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor
from transformers import EncodecModel

from audio_codecs.encodec.checkpoint import OFFICIAL_KEY_MAP
from audio_codecs.encodec.coding import Frame, encode_frames
from audio_codecs.encodec.config import EncodecCodecConfig, codebooks_for_bandwidth, preset
from audio_codecs.encodec.model import build_model
from core.key_map import load_strict, map_state


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the golden README measured 1 vs 2 threads (floats within 7.2e-7,
    codes identical), and on shared, loaded cores one thread is many times faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class GoldenModel:
    """One tiny golden model with its signals, outputs, facts and a cache of our frames."""

    name: str
    config: EncodecCodecConfig
    model: EncodecModel
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    cases: dict
    _frames: dict[tuple[str, str], list[Frame]] = field(default_factory=dict)

    def frames(self, case: str, bw: str) -> list[Frame]:
        """Our `encode` of input `case` at bandwidth `bw` (as written in the keys)."""
        if (case, bw) not in self._frames:
            n_q = codebooks_for_bandwidth(self.config, float(bw))
            audio = self.inputs[case][None]  # [1, C, n]
            self._frames[case, bw] = encode_frames(self.model, self.config, audio, n_q)
        return self._frames[case, bw]


def load_golden_model(folder: Path, name: str) -> GoldenModel:
    """Builds our model of `tiny_<name>` holding the golden state dict, strictly."""
    stem = folder / f"encodec_tiny_{name}"
    config = preset(f"tiny_{name}")
    model = build_model(config)
    state = load_file(f"{stem}_state_dict.safetensors")
    load_strict(model, map_state(state, OFFICIAL_KEY_MAP, source=str(stem)), str(stem))
    return GoldenModel(
        name=name,
        config=config,
        model=model.eval(),
        inputs=load_file(f"{stem}_inputs.safetensors"),
        outputs=load_file(f"{stem}_outputs.safetensors"),
        cases=json.loads(Path(f"{stem}_cases.json").read_text()),
    )


@pytest.fixture(scope="session")
def golden_24k(encodec_golden: Path) -> GoldenModel:
    """The tiny 24 kHz golden model (mono, causal, weight norm)."""
    return load_golden_model(encodec_golden, "24k")


@pytest.fixture(scope="session")
def golden_48k(encodec_golden: Path) -> GoldenModel:
    """The tiny 48 kHz golden model (stereo, time group norm, 1 s chunks, scales)."""
    return load_golden_model(encodec_golden, "48k")


@pytest.fixture(scope="session", params=["24k", "48k"])
def golden_model(request: pytest.FixtureRequest, encodec_golden: Path) -> GoldenModel:
    """Each tiny golden model in turn.

    Names `encodec_golden` itself, so that its tests are tagged `golden` (the marker hook
    sees declared fixtures, not the ones reached through `getfixturevalue`).
    """
    return request.getfixturevalue(f"golden_{request.param}")
