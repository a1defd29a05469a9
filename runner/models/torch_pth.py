"""Read a PyTorch ``.pth`` state dict into numpy arrays without torch.

Two on-disk formats exist:

* zip (``torch.save`` since 1.6): ``<prefix>/data.pkl`` is the pickled object and
  ``<prefix>/data/<key>`` holds the raw bytes of each storage it references;
* legacy (before 1.6): five things one after another in a single file: a pickled magic number, a
  pickled protocol version, pickled system info, the pickled object, a pickled list of storage keys,
  and then, for each key in that order, an int64 element count followed by the raw storage bytes.

In both, the pickle refers to storages through persistent ids and rebuilds tensors with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``. A pickle can run any code
it names, so the unpickler here resolves only those few tensor-rebuilding names and refuses the rest.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from runner.errors import ConvlabError

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class StorageType:
    """What ``torch.FloatStorage`` and friends unpickle to: just the element type."""

    dtype: np.dtype


@dataclass
class Storage:
    """One flat storage; ``data`` is filled once its bytes are read (after the pickle, in legacy files)."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class StorageView:
    """A storage as a pickle references it: legacy files may reference a slice starting at ``offset``."""

    storage: Storage
    offset: int


@dataclass(frozen=True)
class PendingTensor:
    """A tensor whose storage bytes may not have been read yet."""

    view: StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> PendingTensor:
    if not isinstance(storage, StorageView):
        raise pickle.UnpicklingError(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage")
    return PendingTensor(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> PendingTensor:
    return data


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names a tensor state dict needs and refuses everything else."""

    def __init__(self, file, source: str, persistent_load=None):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self._persistent_load = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise ConvlabError(
                f"{self.source} asks to load {module}.{name}, which is not among the names a state dict "
                "of float/int tensors needs; refusing to unpickle it because a pickle can run arbitrary code",
                fix="use a .pth file that holds only a state dict of tensors (torch.save(model.state_dict()))",
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent_load is None:
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r}")
        return self._persistent_load(pid)


def _unpickle(stream: io.BytesIO, source: str, persistent_load=None) -> Any:
    return RestrictedUnpickler(stream, source, persistent_load).load()


def _storage_type(pid: tuple, source: str) -> StorageType:
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage") \
            or not isinstance(pid[1], StorageType):
        raise ConvlabError(f"{source}: unsupported persistent id {pid!r} (not a typed tensor storage)")
    return pid[1]


def _as_str(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _read_storage_bytes(buffer: bytes, storage: Storage, byteorder: str, source: str) -> np.ndarray:
    expected = storage.numel * storage.dtype.itemsize
    if len(buffer) < expected:
        raise ConvlabError(f"{source}: storage {storage.key} holds {len(buffer)} bytes, expected {expected}")
    return np.frombuffer(buffer, dtype=storage.dtype.newbyteorder(byteorder), count=storage.numel)


def _materialize(tensor: PendingTensor, source: str) -> np.ndarray:
    storage = tensor.view.storage
    if storage.data is None:
        raise ConvlabError(f"{source}: storage {storage.key} is referenced but its bytes are missing")
    start = tensor.view.offset + tensor.offset
    if len(tensor.size) != len(tensor.stride) or min((*tensor.size, *tensor.stride, start), default=0) < 0:
        raise ConvlabError(f"{source}: invalid tensor layout size={tensor.size} stride={tensor.stride}")
    if 0 in tensor.size:
        return np.empty(tensor.size, dtype=storage.dtype)
    last = start + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if last >= storage.numel:  # as_strided does not check bounds: never read past the storage
        raise ConvlabError(f"{source}: a tensor reaches element {last} of storage {storage.key}, "
                           f"which has only {storage.numel}")
    itemsize = storage.data.dtype.itemsize
    strided = np.lib.stride_tricks.as_strided(
        storage.data[start:], shape=tensor.size, strides=[s * itemsize for s in tensor.stride], writeable=False
    )
    return np.array(strided, dtype=storage.dtype.newbyteorder("="), order="C", copy=True)


def _to_state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise ConvlabError(f"{source} holds a {type(obj).__name__}, not a state dict",
                           fix="save the weights with torch.save(model.state_dict(), path)")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, PendingTensor):
            raise ConvlabError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor",
                               fix="save the weights with torch.save(model.state_dict(), path)")
        state[_as_str(key)] = _materialize(value, source)
    return state


def _load_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [name for name in names if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ConvlabError(f"{path} is a zip file but not a torch.save archive (no single */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_name = prefix + "byteorder"
        byteorder = "<"
        if byteorder_name in names:
            byteorder = "<" if archive.read(byteorder_name).decode().strip() == "little" else ">"
        storages: dict[str, Storage] = {}

        def persistent_load(pid: tuple) -> StorageView:
            storage_type = _storage_type(pid, path)
            key, numel = _as_str(pid[2]), int(pid[4])
            if key not in storages:
                storage = Storage(key, storage_type.dtype, numel)
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise ConvlabError(f"{path}: the pickle references storage {member}, which the archive lacks")
                storage.data = _read_storage_bytes(archive.read(member), storage, byteorder, path)
                storages[key] = storage
            return StorageView(storages[key], 0)

        return _unpickle(io.BytesIO(archive.read(pickles[0])), path, persistent_load)


def _check_legacy_header(stream: io.BytesIO, path: str) -> str:
    """Read the three header pickles; return the byte order of the storages."""
    magic = _unpickle(stream, path)
    if magic != LEGACY_MAGIC_NUMBER:
        raise ConvlabError(f"{path} is neither a zip nor a legacy torch.save file (wrong magic number)")
    protocol = _unpickle(stream, path)
    if protocol != LEGACY_PROTOCOL_VERSION:
        raise ConvlabError(f"{path}: unsupported legacy torch.save protocol {protocol}")
    sys_info = _unpickle(stream, path)
    return "<" if sys_info.get("little_endian", True) else ">"


def _read_legacy_storages(raw: memoryview, position: int, keys: list, storages: dict[str, Storage],
                          byteorder: str, path: str) -> None:
    """Fill each storage from the records after the pickles: an int64 element count, then the bytes."""
    count_dtype = np.dtype(np.int64).newbyteorder(byteorder)
    for key in map(_as_str, keys):
        storage = storages.get(key)
        if storage is None or position + count_dtype.itemsize > len(raw):
            raise ConvlabError(f"{path}: storage {key} is not referenced by the pickle or the file is truncated")
        numel = int(np.frombuffer(raw, dtype=count_dtype, count=1, offset=position)[0])
        if numel != storage.numel:
            raise ConvlabError(f"{path}: storage {key} has {numel} elements on disk, the pickle says {storage.numel}")
        position += count_dtype.itemsize
        nbytes = numel * storage.dtype.itemsize
        storage.data = _read_storage_bytes(raw[position:position + nbytes], storage, byteorder, path)
        position += nbytes


def _load_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read()
    stream = io.BytesIO(raw)
    byteorder = _check_legacy_header(stream, path)
    storages: dict[str, Storage] = {}

    def persistent_load(pid: tuple) -> StorageView:
        storage_type = _storage_type(pid, path)
        key, numel = _as_str(pid[2]), int(pid[4])
        view_metadata = pid[5] if len(pid) > 5 else None
        storage = storages.setdefault(key, Storage(key, storage_type.dtype, numel))
        view_offset = 0 if view_metadata is None else int(view_metadata[1])  # (view key, offset, size)
        return StorageView(storage, view_offset)

    obj = _unpickle(stream, path, persistent_load)
    keys = _unpickle(stream, path)
    _read_legacy_storages(memoryview(raw), stream.tell(), keys, storages, byteorder, path)
    return obj


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save(model.state_dict())`` file (zip or legacy format) into ``{name: array}``.

    Arrays keep the tensors' dtypes (float32, float16, int64 for ``num_batches_tracked``, ...) and shapes
    in PyTorch's layout, e.g. convolution weights as (out, in, kh, kw).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConvlabError(f"no such weights file: {path}")
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ConvlabError(f"{path} is not a readable torch.save file: {error}") from error
    return _to_state_dict(obj, path)
