"""EnCodec (24 kHz mono, 48 kHz joint stereo) on `transformers.EncodecModel`.

`config` (shapes, `PRESETS`, codebooks per bandwidth, the map to transformers' config),
`model` (build, seeded random weights), `signal` (chunking, scales, overlap-add, mono mix,
resampling), `coding` (the official chunked `encode` / `decode`), `checkpoint` (weights on
disk: the official key map, `convert_official`, `load_converted`, all strict), `codec` (the
pipeline's `Codec`, `PRESETS`, `load`) and `plugin` (EnCodec as the pipeline sees it:
`PLUGIN`). See docs/encodec.md.
"""

from audio_codecs.encodec.plugin import PLUGIN

__all__ = ["PLUGIN"]
