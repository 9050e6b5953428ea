"""Acoustic fingerprints of decoded audio through libchromaprint, the library behind fpcalc.

Near-duplicate detection (`pipeline.quality.duplicates`) needs a print that survives lossy
re-encoding, resampling and trims. Chromaprint computes one from 16-bit PCM: the audio is
resampled to 11025 Hz, cut into 4096-sample frames every 1365 samples, reduced to 12 chroma
bands, and every frame position yields one 32-bit item from 16 classifiers of 2 bits each.

The prepare stage already decodes every song into float32 blocks `[frames, channels]`, so
the print is fed from those blocks: no second decode, no fpcalc process. This is a small
ctypes binding (no Python dependency) to the C library that Debian ships as
`libchromaprint1` (a dependency of ffmpeg's libavformat). The library is loaded on first
use, so importing this module never fails; a missing library raises ChromaprintUnavailable.

Only the first `max_seconds` of a song are fingerprinted (120 s, like fpcalc): the start of
a song identifies it, and the cost stays bounded for hour-long files. Audio too short for a
single item (about 2.7 s: the chroma filter and the classifiers span several frames) gives
an empty print.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import weakref
from collections.abc import Iterable

import numpy as np

MAX_SECONDS = 120.0
# CHROMAPRINT_ALGORITHM_TEST2, the library's and fpcalc's default: prints from other
# algorithms do not compare with it.
ALGORITHM_DEFAULT = 1
# One item per 1365 samples at the library's internal 11025 Hz (4096-sample frames that
# overlap by two thirds); `chromaprint_get_item_duration` reports the same at run time.
ITEM_SECONDS = 1365 / 11025
LIBRARY_NAME = "chromaprint"  # As ctypes.util.find_library looks it up.
LIBRARY_SONAME = "libchromaprint.so.1"  # Debian's libchromaprint1, when the search fails.
_INT16_SCALE = 32768.0


class ChromaprintUnavailable(RuntimeError):
    """libchromaprint cannot be loaded: near-duplicate detection cannot run."""


class ChromaprintError(RuntimeError):
    """The library refused a call (its functions return 0 on failure)."""


_UNAVAILABLE = (
    "libchromaprint cannot be loaded ({detail}); near-duplicate detection in the prepare "
    "stage fingerprints audio with it: install the Debian package libchromaprint1 "
    "(apt-get install libchromaprint1)"
)


def open_library(name: str) -> ctypes.CDLL:
    """Opens libchromaprint by soname or path and declares the functions used here.

    Raises:
        ChromaprintUnavailable: if the library cannot be opened or lacks a function.
    """
    try:
        lib = ctypes.CDLL(name)
        _declare(lib)
    except (OSError, AttributeError) as error:
        raise ChromaprintUnavailable(_UNAVAILABLE.format(detail=error)) from None
    return lib


@functools.cache
def library() -> ctypes.CDLL:
    """The process's libchromaprint, found by the linker's search or by its Debian soname."""
    return open_library(ctypes.util.find_library(LIBRARY_NAME) or LIBRARY_SONAME)


def _declare(lib: ctypes.CDLL) -> None:
    """Prototypes from chromaprint.h: without them ctypes would truncate pointers to int."""
    context = ctypes.c_void_p
    c_int = ctypes.c_int
    prototypes = {
        "chromaprint_new": (context, [c_int]),
        "chromaprint_free": (None, [context]),
        "chromaprint_start": (c_int, [context, c_int, c_int]),
        "chromaprint_feed": (c_int, [context, ctypes.POINTER(ctypes.c_int16), c_int]),
        "chromaprint_finish": (c_int, [context]),
        "chromaprint_get_raw_fingerprint": (
            c_int,
            [context, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint32)), ctypes.POINTER(c_int)],
        ),
        "chromaprint_dealloc": (None, [ctypes.c_void_p]),
        "chromaprint_get_item_duration": (c_int, [context]),
        "chromaprint_get_sample_rate": (c_int, [context]),
    }
    for name, (restype, argtypes) in prototypes.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def _check(result: int, call: str) -> None:
    if result != 1:
        raise ChromaprintError(f"libchromaprint: {call} failed")


class Fingerprinter:
    """One song's fingerprint, fed block by block as the song is decoded.

    Holds a library context until `finish` (or until the object is collected, so a decode
    that fails half way does not leak it).
    """

    def __init__(self, sample_rate: int, channels: int, max_seconds: float = MAX_SECONDS) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"invalid format: {sample_rate} Hz, {channels} channels")
        self._lib = library()
        self._channels = channels
        self._frames_left = round(max_seconds * sample_rate)
        self._context = self._lib.chromaprint_new(ALGORITHM_DEFAULT)
        if not self._context:
            raise ChromaprintError("libchromaprint: chromaprint_new failed")
        self._free = weakref.finalize(self, self._lib.chromaprint_free, self._context)
        _check(self._lib.chromaprint_start(self._context, sample_rate, channels), "start")

    def feed(self, block: np.ndarray) -> None:
        """Adds float32 `[frames, channels]` audio; what lies past `max_seconds` is ignored."""
        if not self._free.alive:
            raise RuntimeError("Fingerprinter.feed after finish")
        if block.ndim != 2 or block.shape[1] != self._channels:
            raise ValueError(f"expected [frames, {self._channels}] audio, got {block.shape}")
        if self._frames_left <= 0:
            return
        block = block[: self._frames_left]
        self._frames_left -= len(block)
        # Interleaved int16 as chromaprint takes it; clipped, since decoded float may exceed 1.
        pcm = np.clip(np.rint(block * _INT16_SCALE), -_INT16_SCALE, _INT16_SCALE - 1)
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        data = pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
        _check(self._lib.chromaprint_feed(self._context, data, pcm.size), "feed")

    def finish(self) -> np.ndarray:
        """The raw fingerprint (uint32 items, empty for too little audio); frees the context."""
        if not self._free.alive:
            raise RuntimeError("Fingerprinter.finish called twice")
        try:
            _check(self._lib.chromaprint_finish(self._context), "finish")
            items = ctypes.POINTER(ctypes.c_uint32)()
            size = ctypes.c_int(0)
            _check(
                self._lib.chromaprint_get_raw_fingerprint(
                    self._context, ctypes.byref(items), ctypes.byref(size)
                ),
                "get_raw_fingerprint",
            )
            try:
                if size.value <= 0:
                    return np.zeros(0, dtype=np.uint32)
                return np.ctypeslib.as_array(items, shape=(size.value,)).astype(np.uint32)
            finally:
                if items:
                    self._lib.chromaprint_dealloc(items)
        finally:
            self._free()


def fingerprint_blocks(
    blocks: Iterable[np.ndarray], sample_rate: int, channels: int, max_seconds: float = MAX_SECONDS
) -> np.ndarray:
    """The raw fingerprint of a decoded song (see `Fingerprinter`); empty when too short."""
    printer = Fingerprinter(sample_rate, channels, max_seconds)
    for block in blocks:
        printer.feed(block)
    return printer.finish()
