"""Every registered codec through the one interface: its plugin, the shard's gain undone
once for all, and a decoding model rebuilt from what a token table records."""

from __future__ import annotations

import pytest
import torch

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from core.errors import InvalidSetting

CPU = torch.device("cpu")
CODECS = tuple(registry.BUILT_IN)


@pytest.mark.parametrize("name", CODECS)
def test_each_plugin_names_itself_and_its_presets(name: str) -> None:
    plugin = registry.plugin(name)
    assert plugin.name == name
    assert {plugin.tiny_preset, plugin.full_size_preset} <= set(plugin.presets)


@pytest.mark.parametrize("name", CODECS)
def test_the_shards_gain_is_undone_once_for_every_codec(name: str) -> None:
    codec = registry.load_codec(CodecSpec(name, preset=registry.plugin(name).tiny_preset), CPU)
    segment = torch.sin(torch.arange(48_000 * 2).reshape(2, -1) * 0.01) * 0.5
    stored = codec.encode([segment * 0.5], song_peaks=[0.9], gains=[0.5])[0]
    assert (stored.codes == codec.encode([segment], song_peaks=[0.9])[0].codes).all()


@pytest.mark.parametrize("name", ["dac", "encodec"])
def test_a_model_that_made_the_codes_is_rebuilt_from_the_tables_record(name: str) -> None:
    spec = CodecSpec(name, preset=registry.plugin(name).tiny_preset, seed=4)
    made = registry.load_codec(spec, CPU)
    recorded = made.info.recorded()
    rebuilt = registry.plugin(name).decoding_codec(recorded, {}, None, CPU)
    assert rebuilt.info == made.info
    # Codes made from a checkpoint need it named; a checkpoint of other weights is refused.
    from_file = type(recorded)(**{**recorded.__dict__, "weights_sha256": "ab" * 32})
    with pytest.raises(InvalidSetting, match=f"--checkpoint {name}=PATH"):
        registry.plugin(name).check_decoding(from_file, {}, None)


def test_an_unknown_codec_or_preset_is_a_usage_error_naming_the_known_ones() -> None:
    with pytest.raises(InvalidSetting, match="known: mucodec, dac, encodec"):
        registry.plugin("mp3")
    with pytest.raises(InvalidSetting, match="unknown preset 'huge'"):
        registry.load_codec(CodecSpec("dac", preset="huge"), CPU)
