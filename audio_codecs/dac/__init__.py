"""DAC (Descript Audio Codec, "Improved RVQGAN") on `transformers.DacModel`.

`config` (shapes, presets, window arithmetic), `quantize` (the official nearest-code rule),
`model` (build, preprocess, encode, decode), `loudness` (BS.1770 as audiotools measures it),
`compress` (the official windowed `compress` / `decompress`), `dac_file` (a safe reader of
`.dac` files), `official_keys` and `weights` (the three weight sources, loaded strictly) and
`codec` (the pipeline's `Codec`). See docs/dac.md.
"""
