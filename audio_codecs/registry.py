"""Codec names -> their implementations: the one place the pipeline learns which exist.

Each codec module provides `PRESETS` (its preset names) and `load(spec, device) -> Codec`.
"""

from __future__ import annotations

from types import ModuleType

import torch

from audio_codecs import encodec, mucodec
from audio_codecs.base import Codec, CodecSpec
from audio_codecs.dac import codec as dac

CODECS: dict[str, ModuleType] = {"mucodec": mucodec, "dac": dac, "encodec": encodec}


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
    return CODECS[name]
