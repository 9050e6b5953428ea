"""The one key-map rule language and the one strict loader (`core.key_map`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.errors import CheckpointError
from core.key_map import invert, load_strict, map_key, map_state
from mucodec.decoder.checkpoint import MAIN_KEY_MAP, VAE_KEY_MAP, VAE_SCOPE
from mucodec.encoder.checkpoint import MUCODEC_KEY_MAP, MUQ_KEY_MAP

TABLE = {
    "layers.{}.attn": "blocks.{}.attention",
    "layers.{}.attn.out.0": "blocks.{}.attention.proj",  # more specific than the rule above
    "groups.{}.items.{}": "g{}.i{}",
    "head.0": "classifier",  # a literal digit matches only itself
    "norm": "final_norm",
    "pretrain_head": None,
}


def test_placeholder_carries_the_layer_index_and_the_rest_of_the_key() -> None:
    assert map_key("layers.11.attn.q.weight", TABLE) == "blocks.11.attention.q.weight"
    assert map_key("groups.2.items.30.bias", TABLE) == "g2.i30.bias"
    assert map_key("norm", TABLE) == "final_norm"
    assert map_key("norm.weight", TABLE) == "final_norm.weight"


def test_the_most_specific_path_wins_whatever_the_table_order() -> None:
    assert map_key("layers.3.attn.out.0.weight", TABLE) == "blocks.3.attention.proj.weight"
    assert map_key("layers.3.attn.out.1.weight", TABLE) == "blocks.3.attention.out.1.weight"


def test_none_drops_the_key_and_everything_below_it() -> None:
    assert map_key("pretrain_head", TABLE) is None
    assert map_key("pretrain_head.linear.weight", TABLE) is None
    mapped = map_state({"pretrain_head.w": 1, "norm.bias": 2}, TABLE)
    assert mapped == {"final_norm.bias": 2}


@pytest.mark.parametrize(
    "key",
    [
        "mystery.weight",
        "head.1.weight",  # the literal "0" does not act as a placeholder
        "layers.x.attn.weight",  # "{}" only stands for digits
        "normalizer.weight",  # a path matches whole segments, not a string prefix
        "layers.3.attention.weight",
    ],
)
def test_an_unknown_key_is_an_error_naming_it(key: str) -> None:
    with pytest.raises(CheckpointError, match=f"'{key}'"):
        map_key(key, TABLE)
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        map_state({"norm.weight": 0, key: 1}, TABLE, source="up.pt")


def test_map_state_lists_every_unknown_key_and_respects_its_scope() -> None:
    with pytest.raises(CheckpointError, match=r"up\.pt: .*\[a\.w, b\.w\]"):
        map_state({"a.w": 0, "b.w": 1, "norm.w": 2}, TABLE, source="up.pt")
    # Keys outside the scope belong to another consumer of the file: skipped, not errors.
    assert map_state({"unet.w": 0, "norm.w": 1}, TABLE, scope=("norm",)) == {"final_norm.w": 1}


def test_invert_round_trips_kept_rules() -> None:
    inverse = invert(TABLE)
    for key in ["layers.4.attn.k.bias", "groups.1.items.2.w", "head.0.weight", "norm.weight"]:
        assert map_key(str(map_key(key, TABLE)), inverse) == key


@pytest.mark.parametrize(
    ("table", "key", "ours"),
    [
        (MUQ_KEY_MAP, "conv.conv.1.conv3.weight", "encoder.subsampling.blocks.1.skip_conv.weight"),
        (
            MUQ_KEY_MAP,
            "conformer.layers.7.conv_module.batch_norm.running_var",
            "encoder.blocks.7.conv.batch_norm.running_var",
        ),
        (MUQ_KEY_MAP, "conformer.pos_conv_embed.conv.bias", None),
        (MUQ_KEY_MAP, "mask_emb", None),
        (
            MUCODEC_KEY_MAP,
            "rvq_muencoder_emb.quantizers.0.codebook.weight",
            "quantizer.quantizers.0.codebook.weight",
        ),
        (
            MAIN_KEY_MAP,
            "cfm_wrapper.estimator.transformer_blocks.2.attn1.to_out.0.bias",
            "flow.estimator.blocks.2.attn.to_out.bias",
        ),
        (MAIN_KEY_MAP, "zero_cond_embedding1", "flow.conditioner.null_cond"),
        (VAE_KEY_MAP, "first_stage_model.vocoder.conv_pre.weight", "vocoder.conv_pre.weight"),
        (VAE_KEY_MAP, "first_stage_model.encoder.conv_in.weight", None),
    ],
)
def test_every_upstream_table_speaks_the_same_language(table, key: str, ours: str | None) -> None:
    assert map_key(key, table) == ours


def test_vae_scope_ignores_audioldm_own_unet() -> None:
    state = {"model.diffusion_model.out.weight": 0, "scale_factor": 1}
    assert map_state(state, VAE_KEY_MAP, scope=VAE_SCOPE) == {"vae.scale_factor": 1}


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def _good() -> dict[str, torch.Tensor]:
    return {
        "linear.weight": torch.ones(2, 3),
        "linear.bias": torch.ones(2),
        "steps": torch.ones(()),
    }


def test_load_strict_reports_every_problem_at_once() -> None:
    bad = {"linear.weight": torch.ones(3, 3), "extra": torch.ones(1), "steps": torch.ones(())}
    with pytest.raises(CheckpointError) as caught:
        load_strict(_Tiny(), bad, "bad.safetensors")
    message = str(caught.value)
    assert message.startswith("bad.safetensors: ")
    assert "missing keys: [linear.bias]" in message
    assert "unexpected keys: [extra]" in message
    assert "linear.weight: checkpoint (3, 3) vs model (2, 3)" in message

    model = _Tiny()
    load_strict(model, _good())
    assert torch.equal(model.linear.weight, torch.ones(2, 3))
    assert model.steps.dtype == torch.long  # cast to the module's own dtype


def test_load_strict_assigns_into_a_meta_module() -> None:
    with torch.device("meta"):
        model = _Tiny()
    state = {
        "linear.weight": torch.ones(2, 3),
        "linear.bias": torch.ones(2),
        "steps": torch.ones(()),
    }
    load_strict(model, state)
    assert not model.linear.weight.is_meta and model.steps.dtype == torch.long
