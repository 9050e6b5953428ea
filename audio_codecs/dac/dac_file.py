"""The official `.dac` file (`DACFile`), read without unpickling anything from the file.

`DACFile.save` writes `np.save` of a dict: an `.npy` v1.0 header (descr `|O`, shape `()`)
followed by a protocol-4 pickle of a 0-d object array holding
`{"codes": uint16 [nb*nac, n_q, F], "metadata": {input_db, original_length, sample_rate,
chunk_length, channels, padding, dac_version}}`. The official `DACFile.load` opens it with
`np.load(allow_pickle=True)`, which runs whatever the pickle names. `read_dac_file` parses
the header with numpy's header reader and the pickle with an unpickler that resolves only
three names (numpy's `_reconstruct`, `ndarray` and `dtype`) to stand-ins of its own, then
builds the arrays itself from their recorded bytes. Any other name is refused.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from core.errors import RejectedInput

SUPPORTED_VERSIONS = ("1.0.0",)
_NUMERIC_KINDS = "biuf"  # bool, int, uint, float: the dtypes arrays in the file may have.


class DacFileError(RejectedInput, ValueError):
    """A `.dac` file is malformed, of an unknown version, or names code it may not run."""


@dataclass(frozen=True)
class DacFile:
    """The contents of an official `.dac` file (the official `DACFile`'s fields).

    Attributes:
        codes: `[nb * channels, n_codebooks, frames]` uint16, channels folded into the batch.
        chunk_length: Frames per window (compress); all frames when unchunked.
        original_length: Samples of the input at `sample_rate`.
        input_db: `[nb]` float32, the input's integrated loudness (LUFS).
        channels: Audio channels of the input.
        sample_rate: The input's sample rate (Hz).
        padding: Whether the convs were padded (unchunked) or not (windowed).
        dac_version: Format version; "1.0.0".
    """

    codes: np.ndarray
    chunk_length: int
    original_length: int
    input_db: np.ndarray
    channels: int
    sample_rate: int
    padding: bool
    dac_version: str = "1.0.0"


class _DtypeStub:
    """What `numpy.dtype(name, align, copy)` yields in the file: a name and a byte order."""

    def __init__(self, name: str, *_: Any) -> None:
        if not isinstance(name, str):
            raise DacFileError(f"dtype name {name!r} is not a string")
        self.name = name
        self.order = "|"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in "<>|=":
            raise DacFileError(f"unexpected dtype state {state!r}")
        self.order = state[1]

    def resolve(self, allow_object: bool) -> np.dtype:
        """The real numpy dtype, refusing anything but numbers (and the root's object)."""
        if self.name in ("O8", "O4") and allow_object:
            return np.dtype(object)
        dtype = np.dtype(self.name)
        if dtype.kind not in _NUMERIC_KINDS:
            raise DacFileError(f"array dtype {self.name!r} is not allowed in a .dac file")
        return dtype.newbyteorder("<" if self.order in "|=" else self.order)


class _ArrayStub:
    """What `_reconstruct(ndarray, ...)` yields: the array's state, turned into data later."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def build(self, allow_object: bool) -> np.ndarray:
        """The array from `(version, shape, dtype, fortran, data)`, built by us."""
        if not (isinstance(self.state, tuple) and len(self.state) == 5):
            raise DacFileError("malformed array record")
        _, shape, dtype_stub, fortran, data = self.state
        if not isinstance(dtype_stub, _DtypeStub) or not isinstance(shape, tuple):
            raise DacFileError("malformed array record")
        dtype = dtype_stub.resolve(allow_object)
        order = "F" if fortran else "C"
        if dtype.kind == "O":
            if not isinstance(data, list):
                raise DacFileError("object array without a list of items")
            array = np.empty(len(data), dtype=object)
            array[:] = data
            return array.reshape(shape, order=order)
        if not isinstance(data, bytes | bytearray):
            raise DacFileError("numeric array without raw bytes")
        return np.frombuffer(bytes(data), dtype=dtype).reshape(shape, order=order).copy()


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if subtype is not _NDARRAY:
        raise DacFileError("only plain ndarrays may be reconstructed")
    return _ArrayStub()


_NDARRAY = object()  # The stand-in for `numpy.ndarray`; only `_reconstruct` accepts it.
_ALLOWED = {"_reconstruct": _reconstruct, "ndarray": _NDARRAY, "dtype": _DtypeStub}
_NUMPY_MODULES = ("numpy._core.multiarray", "numpy.core.multiarray", "numpy")


class _Unpickler(pickle.Unpickler):
    """Resolves numpy's array-rebuilding names to stand-ins; refuses every other name."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES and name in _ALLOWED:
            return _ALLOWED[name]
        raise DacFileError(f"the file names {module}.{name}, which a .dac file never needs")

    def persistent_load(self, pid: Any) -> Any:
        raise DacFileError("persistent ids are not allowed in a .dac file")


def _plain(value: Any) -> Any:
    """Arrays built from their stubs, containers walked; anything else as it is."""
    if isinstance(value, _ArrayStub):
        return value.build(allow_object=False)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, _DtypeStub):
        raise DacFileError("a bare dtype where data was expected")
    return value


def read_dac_file(path: str | Path) -> DacFile:
    """Reads an official `.dac` file safely (see the module docstring).

    Args:
        path: The file.

    Returns:
        Its contents.

    Raises:
        DacFileError: if the file is not an `.npy` of one pickled dict with the official
            fields, names anything beyond numpy's array rebuilders, or has another version.
    """
    raw = Path(path).read_bytes()
    stream = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(stream)
        if version != (1, 0):
            raise DacFileError(f"{path}: .npy version {version} is not 1.0")
        shape, _, dtype = npy_format.read_array_header_1_0(stream)
    except ValueError as error:
        raise DacFileError(f"{path}: not an .npy file: {error}") from error
    if shape != () or dtype != np.dtype(object):
        raise DacFileError(f"{path}: expected one pickled object, found {dtype} {shape}")
    try:
        root = _Unpickler(stream).load()
    except DacFileError as error:
        raise DacFileError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as error:
        raise DacFileError(f"{path}: malformed pickle: {error}") from error
    if not isinstance(root, _ArrayStub):
        raise DacFileError(f"{path}: the pickle is not an array")
    content = _plain(root.build(allow_object=True).item())
    return _dac_file(content, path)


def _dac_file(content: Any, path: str | Path) -> DacFile:
    """Checks the dict's fields and types and wraps them in a `DacFile`."""
    if not isinstance(content, dict) or set(content) != {"codes", "metadata"}:
        raise DacFileError(f"{path}: expected a dict with codes and metadata")
    meta = content["metadata"]
    fields = {
        "input_db",
        "original_length",
        "sample_rate",
        "chunk_length",
        "channels",
        "padding",
        "dac_version",
    }
    if not isinstance(meta, dict) or set(meta) != fields:
        raise DacFileError(f"{path}: metadata fields differ from the official {sorted(fields)}")
    if meta["dac_version"] not in SUPPORTED_VERSIONS:
        raise DacFileError(f"{path}: dac_version {meta['dac_version']!r} is not supported")
    codes, input_db = content["codes"], meta["input_db"]
    if not (isinstance(codes, np.ndarray) and codes.dtype == np.uint16 and codes.ndim == 3):
        raise DacFileError(f"{path}: codes are not a uint16 [n, n_q, frames] array")
    if not isinstance(input_db, np.ndarray):
        raise DacFileError(f"{path}: input_db is not an array")
    ints = ("original_length", "sample_rate", "chunk_length", "channels")
    if any(type(meta[k]) is not int for k in ints) or type(meta["padding"]) is not bool:
        raise DacFileError(f"{path}: metadata {ints} must be ints and padding a bool")
    return DacFile(
        codes=codes,
        chunk_length=meta["chunk_length"],
        original_length=meta["original_length"],
        input_db=input_db.astype(np.float32),
        channels=meta["channels"],
        sample_rate=meta["sample_rate"],
        padding=meta["padding"],
        dac_version=meta["dac_version"],
    )
