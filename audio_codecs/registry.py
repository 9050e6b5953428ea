"""Codec names -> their implementations: the one place the pipeline learns which exist.

Each codec module provides `PRESETS` (its preset names) and `load(spec, device) -> Codec`.
A codec's module is imported when it is first asked for: DAC and EnCodec bring in
`transformers` (over 2 s of import), which a MuCodec-only actor never needs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch

from audio_codecs.base import Codec, CodecSpec

# Name -> the module that implements it.
CODECS: dict[str, str] = {
    "mucodec": "audio_codecs.mucodec",
    "dac": "audio_codecs.dac.codec",
    "encodec": "audio_codecs.encodec",
}


def codec_presets(name: str) -> tuple[str, ...]:
    """The preset names of codec `name`.

    Raises:
        KeyError: if `name` is not a known codec.
    """
    return tuple(_module(name).PRESETS)


def load_codec(spec: CodecSpec, device: torch.device) -> Codec:
    """Builds the codec `spec` describes on `device`, in eval mode.

    Raises:
        KeyError: if the codec or its preset is unknown.
    """
    module = _module(spec.codec)
    if spec.preset is not None and spec.preset not in module.PRESETS:
        raise KeyError(f"{spec.codec}: unknown preset {spec.preset!r}; known: {module.PRESETS}")
    return module.load(spec, device)


def _module(name: str) -> ModuleType:
    if name not in CODECS:
        raise KeyError(f"unknown codec {name!r}; known: {sorted(CODECS)}")
    return importlib.import_module(CODECS[name])
