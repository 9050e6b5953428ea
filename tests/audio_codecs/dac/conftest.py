"""Fixtures of the DAC tests: the golden folder and, per tiny model, its loaded golden set."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file
from torch import Tensor
from transformers import DacModel

from audio_codecs.dac.checkpoint import fold_weight_norm, official_key_map
from audio_codecs.dac.config import DacCodecConfig
from audio_codecs.dac.model import build_model
from core.key_map import load_strict, map_state

TAGS = ("44k", "16k")


@dataclass(frozen=True)
class GoldenSet:
    """One tiny model's golden files, its weights loaded into our model."""

    tag: str
    config: DacCodecConfig
    model: DacModel
    official_state: dict[str, Tensor]
    official_kwargs: dict[str, Any]
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    cases: dict[str, Any]
    dac_file: Path


def load_golden_set(folder: Path, tag: str) -> GoldenSet:
    """Reads `dac_tiny_<tag>_*` and loads its official state dict through our key map."""
    prefix = folder / f"dac_tiny_{tag}"
    kwargs = json.loads(Path(f"{prefix}_config.json").read_text())
    official_kwargs = kwargs["metadata_kwargs_as_BaseModel_save_writes"]
    config = DacCodecConfig.from_official_kwargs(official_kwargs)
    state = load_file(f"{prefix}_state_dict.safetensors")
    model = build_model(config, seed=None, device="meta")
    load_strict(model, map_state(fold_weight_norm(state), official_key_map(4)))
    return GoldenSet(
        tag=tag,
        config=config,
        model=model.eval(),
        official_state=state,
        official_kwargs=official_kwargs,
        inputs=load_file(f"{prefix}_inputs.safetensors"),
        outputs=load_file(f"{prefix}_outputs.safetensors"),
        cases=json.loads(Path(f"{prefix}_cases.json").read_text()),
        dac_file=Path(f"{prefix}_compress_chunked.dac"),
    )


@pytest.fixture(scope="session", params=TAGS)
def golden_set(request: pytest.FixtureRequest, dac_golden: Path) -> GoldenSet:
    """Each tiny golden model in turn (44 kHz-style, then 16 kHz-style)."""
    return load_golden_set(dac_golden, request.param)
