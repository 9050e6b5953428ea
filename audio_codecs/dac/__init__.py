"""DAC (Descript Audio Codec, "Improved RVQGAN") on `transformers.DacModel`.

`config` (shapes, `PRESETS`, window arithmetic), `quantize` (the official nearest-code
rule), `model` (build, preprocess, encode, decode), `loudness` (BS.1770 as audiotools
measures it), `compress` (the official windowed `compress` / `decompress`), `dac_file` (a
safe reader of `.dac` files), `resample` (48 kHz <-> the model rate), `checkpoint`
(weights on disk: the official key map, `convert_official`, `load_converted`, all strict)
`codec` (the pipeline's `Codec`, `PRESETS`, `load`) and `plugin` (DAC as the pipeline sees
it: `PLUGIN`). See docs/dac.md.
"""

from audio_codecs.dac.plugin import PLUGIN

__all__ = ["PLUGIN"]
