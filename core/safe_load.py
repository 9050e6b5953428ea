"""Reading PyTorch checkpoints without executing anything they contain.

A `.pt` file is a zip archive holding a pickle (`data.pkl`) plus one raw record per tensor
storage. Unpickling runs whatever callables the pickle names, which is why untrusted
checkpoints must not go through plain `pickle`, nor through torch's loader with weights_only off.

`load_checkpoint` first tries `torch.load(weights_only=True, mmap=True)`, PyTorch's own
restricted loader. Fairseq checkpoints such as MuQ's `muq.pt` fail there: besides the
weights under `"model"` they carry an `argparse.Namespace` or omegaconf config and training
state, i.e. classes the weights-only loader does not know. For those it falls back to
`_RestrictedUnpickler`, which

* resolves only an allow-list of inert names (tensor rebuilders, `OrderedDict`, plain
  containers); every other global becomes a fresh `InertObject` subclass that records its
  name and the arguments it was given and runs no code of its own;
* rebuilds tensors from the archive's storage records, memory-mapped copy-on-write, so a
  4 GB checkpoint costs no memory until tensors are read.

A legacy (pre-zip, torch < 1.6) file, such as an older `torch.save` may write, goes only
through torch's weights-only loader (without mmap); anything outside its allow-list is
refused.

What comes back is plain data: dicts, lists, tensors, and `InertObject`s in place of config
objects. Nothing from the file is ever called.
"""

from __future__ import annotations

import mmap
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError, MissingInput

# Legacy typed-storage names (what the pickle refers to) -> element dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}


class CheckpointFormatError(CheckpointError):
    """The file is not a PyTorch checkpoint this reader can open (a kind of `CheckpointError`)."""


class InertObject:
    """Stand-in for any class or function a checkpoint names that is not allow-listed.

    Calling, constructing or restoring state only records data; no code from the file runs.
    Subclasses are created per name so that `type(obj).qualified_name` says what it was.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        instance = super().__new__(cls)
        instance.args = args
        instance.state = None
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Accepts and ignores any arguments (restored state arrives via `__setstate__`).

        Args:
            *args: Ignored.
            **kwargs: Ignored.
        """
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name}>"


def _inert_class(module: str, name: str) -> type[InertObject]:
    return type(
        f"Inert_{name}".replace(".", "_"), (InertObject,), {"qualified_name": f"{module}.{name}"}
    )


def _rebuild_tensor(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Our own `torch._utils._rebuild_tensor_v2`: a strided view of a flat storage tensor.

    `as_strided` checks the view against the storage's size, so a malformed file raises
    instead of reading out of bounds.
    """
    if not isinstance(storage, torch.Tensor):
        raise CheckpointFormatError("tensor record without storage")
    return storage.as_strided(tuple(size), tuple(stride), int(storage_offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, *args: Any) -> torch.Tensor:
    """Parameters come back as plain tensors; only the values are needed."""
    return data


class _StorageType:
    """What a `torch.<Name>Storage` global resolves to: it only carries the dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


# Names that resolve to real objects. Each is a pure data constructor: none can reach the
# file system, the interpreter or arbitrary attributes.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    # Protocol-2 pickles from Python 3 encode `bytes` as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): lambda text, encoding="latin1", *rest: bytes(text, encoding),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` never returns code from outside `_ALLOWED`.

    This is safe by construction: the only way a pickle can run code is through the
    callables that `find_class` hands it (REDUCE / NEWOBJ / BUILD act on those), and here
    they are either the pure constructors above or `InertObject` subclasses.
    """

    def __init__(self, file: Any, archive: _Archive) -> None:
        super().__init__(file)
        self._archive = archive

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name builtins by their Python 2 module.
        module = "builtins" if module == "__builtin__" else module
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        return _ALLOWED.get((module, name)) or _inert_class(module, name)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointFormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"unknown storage type {storage_type!r}")
        return self._archive.storage(str(key), storage_type.dtype, int(numel))


class _Archive:
    """The storage records of a torch zip checkpoint, memory-mapped copy-on-write."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._zip = zipfile.ZipFile(self._file)
        names = self._zip.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointFormatError(f"{path}: no single data.pkl in the archive")
        self.prefix = pickles[0][: -len("data.pkl")]
        if f"{self.prefix}byteorder" in names:
            order = self._zip.read(f"{self.prefix}byteorder").decode()
            if order != "little":
                raise CheckpointFormatError(f"{path}: byte order {order!r} is not supported")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY)
        self._cache: dict[str, torch.Tensor] = {}

    def pickle_bytes(self) -> bytes:
        return self._zip.read(f"{self.prefix}data.pkl")

    def storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """Flat tensor [numel] over the record `data/<key>` (shared between views)."""
        if key in self._cache:
            return self._cache[key]
        info = self._zip.getinfo(f"{self.prefix}data/{key}")
        nbytes = numel * torch.empty(0, dtype=dtype).element_size()
        if info.file_size != nbytes:
            raise CheckpointFormatError(f"record {key}: {info.file_size} bytes, expected {nbytes}")
        if nbytes == 0:
            flat = torch.empty(0, dtype=dtype)
        elif info.compress_type == zipfile.ZIP_STORED:
            # Local file header: 30 fixed bytes, then the name and the extra field.
            header = self._map[info.header_offset : info.header_offset + 30]
            start = (
                info.header_offset
                + 30
                + int.from_bytes(header[26:28], "little")
                + int.from_bytes(header[28:30], "little")
            )
            flat = torch.frombuffer(self._map, dtype=dtype, count=numel, offset=start)
        else:
            flat = torch.frombuffer(bytearray(self._zip.read(info)), dtype=dtype)
        self._cache[key] = flat
        return flat


def _restricted_load(path: Path) -> Any:
    """Unpickles `path` with `_RestrictedUnpickler` (see the module docstring)."""
    import io

    try:
        archive = _Archive(path)
    except zipfile.BadZipFile as error:
        raise CheckpointFormatError(
            f"{path} is not a zip-format PyTorch checkpoint (torch >= 1.6); "
            "re-save it with a current torch"
        ) from error
    try:
        return _RestrictedUnpickler(io.BytesIO(archive.pickle_bytes()), archive).load()
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as error:
        # E.g. a pickle that calls what a stand-in replaced (`getattr(cls, "touch")(...)`):
        # the stand-in refuses, and nothing from the file ran.
        raise CheckpointFormatError(
            f"{path}: refused, its pickle is not plain data (nothing from it was run): {error}"
        ) from None


def _legacy_load(path: Path) -> Any:
    """A pre-zip (legacy) torch file, through torch's weights-only unpickler (no mmap there).

    Only plain containers and tensors load; a file naming anything else is refused.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names_code = "GLOBAL" in str(error)  # A name outside the allow-list, not junk.
        if not names_code:
            raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint: {error}") from None
        raise CheckpointFormatError(
            f"{path} is not a PyTorch checkpoint of plain tensors: refused, it names objects "
            f"outside torch's weights-only allow-list (nothing from it was run): {error}"
        ) from None
    except Exception as error:  # Random bytes make the unpickler fail in any way at all.
        raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint: {error!r}") from None


def load_checkpoint(path: str | Path) -> Any:
    """Loads a `.pt` / `.pth` checkpoint as plain data, never executing code from it.

    Args:
        path: Local checkpoint file.

    Returns:
        The unpickled object; tensors are CPU tensors, unknown objects are `InertObject`s.

    Raises:
        FileNotFoundError: if the file does not exist.
        CheckpointFormatError: if it is not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        return _legacy_load(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        pass  # Names outside torch's allow-list (fairseq configs): use our reader.
    except RuntimeError as error:
        if not zipfile.is_zipfile(path):
            raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint: {error}") from None
    return _restricted_load(path)
