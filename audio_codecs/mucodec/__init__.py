"""MuCodec behind the codec interface: `codec` (encode with the tokenizer), `decoding` (the
spot-check's decoder), `checkpoint` (official tokenizer weights -> ours) and `plugin`.

The model itself is the `mucodec` package; this folder only adapts it.
"""

from audio_codecs.mucodec.plugin import PLUGIN

__all__ = ["PLUGIN"]
