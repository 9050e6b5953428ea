"""EnCodec (24 kHz mono, 48 kHz joint stereo) behind the codec interface, on transformers.

The registry uses `PRESETS` and `load`; see `docs/encodec.md`.
"""

from audio_codecs.encodec.checkpoint import convert_official
from audio_codecs.encodec.codec import PRESETS, EncodecCodec, load

__all__ = ["PRESETS", "EncodecCodec", "convert_official", "load"]
