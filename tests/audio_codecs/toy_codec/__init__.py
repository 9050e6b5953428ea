"""A fourth codec that lives in the tests: a plugin the pipeline finds through an entry point.

`codec` (a block-mean coder: each 10 ms of the channel mean, mu-law quantised; decoded to
a step signal on both channels) and `plugin` (its presets, checkpoint conversion of a
JSON "official" file, and `PLUGIN`). Small on purpose: it proves that a codec needs nothing
outside its folder and its registration (docs/adding-a-codec.md).
"""

from tests.audio_codecs.toy_codec.plugin import PLUGIN

__all__ = ["PLUGIN"]
