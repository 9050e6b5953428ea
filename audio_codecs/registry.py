"""Codec names -> their plugins: the one place the pipeline learns which codecs exist.

One line per codec folder of `audio_codecs/` (its package exports `PLUGIN`, a
`CodecPlugin`). A codec outside this repository joins through the entry point group
`mucodec_pipeline.codecs` (name = "package.module" exporting `PLUGIN`). A plugin's module
is imported when it is first asked for: DAC and EnCodec bring in `transformers` (over 2 s
of import), which a MuCodec-only actor never needs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

from audio_codecs.base import Codec, CodecSpec
from audio_codecs.plugin import CodecPlugin
from core.errors import InvalidSetting

if TYPE_CHECKING:  # Only for annotations: listing codecs needs no torch.
    import torch

BUILT_IN: dict[str, str] = {
    "mucodec": "audio_codecs.mucodec",
    "dac": "audio_codecs.dac",
    "encodec": "audio_codecs.encodec",
}
# Stand-ins that make no real codes: listed only where asked for (`codecs(simulated=True)`),
# so the demo, the spot-check and "every codec" defaults never pick them.
SIMULATED: dict[str, str] = {
    "simulated": "audio_codecs.simulated",  # A device of a set speed: measures the feed.
}
ENTRY_POINT_GROUP = "mucodec_pipeline.codecs"
DEFAULT_CODEC = "mucodec"  # What `--codec` and a bare `--checkpoint PATH` mean by default.


def codecs(*, simulated: bool = False) -> dict[str, str]:
    """Every codec's name -> the module that exports its plugin: built-in ones first, the
    simulated ones (`SIMULATED`) only when asked for."""
    found = {**BUILT_IN, **(SIMULATED if simulated else {})}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def simulates_device(name: str) -> bool:
    """Whether codec `name` stands in for a device (`SIMULATED`) rather than computing."""
    return name in SIMULATED


def plugin(name: str) -> CodecPlugin:
    """The plugin of codec `name`, its module imported now if not before.

    Raises:
        InvalidSetting: if `name` is not a known codec.
    """
    known = codecs(simulated=True)
    if name not in known:
        raise InvalidSetting(f"unknown codec {name!r}; known: {', '.join(known)}")
    return importlib.import_module(known[name]).PLUGIN


def load_codec(spec: CodecSpec, device: torch.device) -> Codec:
    """Builds the codec `spec` describes on `device`, in eval mode.

    Raises:
        InvalidSetting: if the codec or its preset is unknown.
    """
    codec = plugin(spec.codec)
    if spec.preset is not None and spec.preset not in codec.presets:
        raise InvalidSetting(
            f"{spec.codec}: unknown preset {spec.preset!r}; known: {', '.join(codec.presets)}"
        )
    return codec.load(spec, device)
