"""Exports of token tables for the loaders trainers use: Lhotse Shar, Hugging Face datasets.

`samples` (the token parts of one or more codecs read back, joined by key, lyric lines on
each codec's frames), `formats` (the protocol every format implements and the registry of
formats), one module per format (`lhotse_shar`, `hf_datasets`), and the stage (`stage`:
one unit per token part, each published with a completion marker, so a killed export
reruns to the same files).
"""
