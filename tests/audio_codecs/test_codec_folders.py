"""The DAC and EnCodec folders agree: the same module and names for the same role."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from audio_codecs.base import Codec

FOLDERS = ("dac", "encodec")


def _module(folder: str, name: str):
    return importlib.import_module(f"audio_codecs.{folder}.{name}")


@pytest.mark.parametrize("folder", FOLDERS)
def test_config_has_a_public_dict_of_presets(folder: str) -> None:
    config = _module(folder, "config")
    names = _module(folder, "codec").PRESETS  # The registry's tuple of names.
    assert all(config.preset(name) is value for name, value in config.PRESETS.items())
    assert names == tuple(config.PRESETS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_checkpoint_has_the_format_and_the_loader_of_our_directory(folder: str) -> None:
    checkpoint = _module(folder, "checkpoint")
    format_and_version = (checkpoint.FORMAT, checkpoint.FORMAT_VERSION)
    assert format_and_version == (f"{folder}-codec", 1)
    fields = [f.name for f in dataclasses.fields(checkpoint.LoadedModel)]
    assert fields == ["model", "config", "sha256"]
    assert checkpoint.LoadedModel.__dataclass_params__.frozen
    parameters = inspect.signature(checkpoint.load_converted).parameters
    assert list(parameters) == ["directory", "device"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_codec_has_a_public_read_only_device(folder: str) -> None:
    codec = _module(folder, "codec")
    (cls,) = [c for c in vars(codec).values() if inspect.isclass(c) and c.__base__ is Codec]
    device = inspect.getattr_static(cls, "device")
    assert isinstance(device, property) and device.fset is None
