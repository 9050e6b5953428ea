"""A simulated accelerator: a codec that holds each batch as a GPU would and uses no CPU.

`codec` (the `Codec`: sleeps a set time per segment, returns deterministic codes shaped as a
real codec's) and `plugin` (`PLUGIN`). With it any machine measures what feeds a GPU: the
shard reading, decoding, hand-offs and part writing of the tokenize stage, alone (no device
time) or overlapped with a device of a chosen speed (`jobs.bench tokenize --codec simulated`).
"""

from audio_codecs.simulated.plugin import PLUGIN

__all__ = ["PLUGIN"]
