"""Fixtures for the encoder-side tests: golden tensors and the golden tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.key_map import load_strict
from mucodec.encoder import checkpoint as ckpt
from mucodec.encoder.config import TokenizerConfig, tiny
from mucodec.encoder.tokenizer import MuCodecTokenizer


def official_tiny_state(encoder_golden: Path) -> dict[str, torch.Tensor]:
    """The golden tiny model laid out like an official `mucodec.pt` (muencoder + RVQ a)."""
    muq = load_file(encoder_golden / "muencoder_tiny_state_dict.safetensors")
    rvq = load_file(encoder_golden / "rvq_tiny_a_state_dict.safetensors")
    outputs = load_file(encoder_golden / "muencoder_tiny_outputs.safetensors")
    state = {f"muencoder.{k}": v for k, v in muq.items()}
    state.update({f"rvq_muencoder_emb.{k}": v for k, v in rvq.items()})
    state["rsq48tomuencoder.kernel"] = outputs["resample_kernel"]
    return state


def golden_tokenizer(encoder_golden: Path, config: TokenizerConfig) -> MuCodecTokenizer:
    """A tokenizer of `config` (tiny layout) with the golden weights, via the official map."""
    tokenizer = MuCodecTokenizer._empty(config)
    state, _ = ckpt.map_official_state(
        config, tokenizer.state_dict().keys(), official_tiny_state(encoder_golden)
    )
    load_strict(tokenizer, state, "golden")
    return tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(encoder_golden: Path) -> MuCodecTokenizer:
    """The golden tiny model (tokens from layer_results[2]), shared by the session."""
    return golden_tokenizer(encoder_golden, tiny())


@pytest.fixture(scope="session")
def golden_inputs(encoder_golden: Path) -> dict[str, torch.Tensor]:
    return load_file(encoder_golden / "input.safetensors")


@pytest.fixture(scope="session")
def golden_outputs(encoder_golden: Path) -> dict[str, torch.Tensor]:
    return load_file(encoder_golden / "muencoder_tiny_outputs.safetensors")


@pytest.fixture(scope="session")
def golden_encode(encoder_golden: Path) -> dict[str, torch.Tensor]:
    return load_file(encoder_golden / "mucodec_encode_tiny.safetensors")
