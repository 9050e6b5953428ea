"""MuCodec in PyTorch: the encoder wing (audio -> tokens), the decoder wing (tokens -> audio).

Shared beside the wings: configs (`config`), the quantiser, precision, the key-map language
and strict loader (`key_map`), safe pickle reading and our checkpoint directory format.
This package never imports ray, pyarrow, webdataset, fsspec, `pipeline` or `jobs`.
"""
