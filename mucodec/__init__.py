"""MuCodec in PyTorch: the encoder wing (audio -> tokens), the decoder wing (tokens -> audio).

Shared by the wings: the config format version and the quantiser's config (`config`) and
the quantiser. What every model shares (JSON configs, key maps, safe loading, precision)
is in `core`. This package never imports ray, pyarrow, webdataset, fsspec, `pipeline` or
`jobs`.
"""
