"""Real data: medmnist npz files (grayscale, RGB, other sizes, download), class folders, class choice, subsets, tensors."""

import struct
import zlib

import numpy as np
import pytest
from conftest import write_class_folders, write_medmnist_npz

from synthaug.data.images import class_names, load_split, resolve_classes
from synthaug.data.subsets import subset_indices
from synthaug.storage.pixels import to_model_tensor, to_uint8
from synthaug.core.errors import UserError
from synthaug.recipe.sections import DataConfig, SubsetConfig


def test_medmnist_npz_grayscale_and_rgb(breast_root, blood_root):
    with pytest.warns(UserWarning, match="MD5 differs"):
        gray = load_split(DataConfig(medmnist="breastmnist", root=breast_root), "train")
    assert gray.images.shape == (24, 28, 28, 1) and gray.images.dtype == np.uint8
    assert gray.labels.dtype == np.int64 and gray.counts() == [12, 12]
    assert gray.class_names == ["malignant", "normal, benign"]
    with pytest.warns(UserWarning):
        rgb = load_split(DataConfig(medmnist="bloodmnist", root=blood_root), "test")
    assert rgb.images.shape == (16, 28, 28, 3) and len(rgb.class_names) == 8


def test_channels_can_be_forced(breast_root):
    with pytest.warns(UserWarning):
        data = load_split(DataConfig(medmnist="breastmnist", root=breast_root, channels=3), "val")
    assert data.channels == 3
    assert (data.images[..., 0] == data.images[..., 2]).all()


def test_other_sizes_read_their_own_file(tmp_path):
    write_medmnist_npz(tmp_path, "retinamnist", classes=5, channels=3, size=64, per_class=(1, 1, 1))
    with pytest.warns(UserWarning):
        data = load_split(DataConfig(medmnist="retinamnist", size=64, root=tmp_path), "train")
    assert data.images.shape == (5, 64, 64, 3)


def test_missing_file_without_network_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("synthaug.data.images.urllib.request.urlopen", offline)
    with pytest.raises(UserError) as err:
        load_split(DataConfig(medmnist="dermamnist", root=tmp_path), "train")
    message = str(err.value)
    assert str(tmp_path / "dermamnist.npz") in message and "zenodo.org" in message and "\n" not in message


def test_download_is_md5_checked_and_saved(tmp_path, monkeypatch):
    import hashlib
    import io

    import medmnist

    write_medmnist_npz(tmp_path / "src", "organsmnist", classes=11, channels=1, per_class=(1, 1, 1))
    payload = (tmp_path / "src" / "organsmnist.npz").read_bytes()
    monkeypatch.setitem(medmnist.INFO["organsmnist"], "MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr("synthaug.data.images.urllib.request.urlopen", lambda url, timeout: io.BytesIO(payload))
    data = load_split(DataConfig(medmnist="organsmnist", root=tmp_path / "dl"), "train")
    assert (tmp_path / "dl" / "organsmnist.npz").read_bytes() == payload
    assert data.counts() == [1] * 11
    monkeypatch.setitem(medmnist.INFO["organsmnist"], "MD5", "0" * 32)
    with pytest.raises(UserError, match="wrong MD5"):
        load_split(DataConfig(medmnist="organsmnist", root=tmp_path / "dl2"), "train")
    assert not (tmp_path / "dl2" / "organsmnist.npz").exists()


def test_folder_per_class_any_size_resized(tmp_path):
    root = write_class_folders(tmp_path / "imgs", ["cyst", "tumour"], n=3, size=40, channels=3)
    data = load_split(DataConfig(folder=root, size=16), "train")
    assert data.images.shape == (6, 16, 16, 3)
    assert data.class_names == ["cyst", "tumour"] and data.counts() == [3, 3]
    gray = write_class_folders(tmp_path / "gray", ["a", "b"], n=2, size=16, channels=1)
    assert load_split(DataConfig(folder=gray, size=16), "train").channels == 1


def test_folder_with_splits_and_missing_split(tmp_path):
    root = write_class_folders(tmp_path / "s", ["a", "b"], n=2, size=16, channels=1, splits=True)
    assert load_split(DataConfig(folder=root, size=16), "test").images.shape[0] == 4
    flat = write_class_folders(tmp_path / "flat", ["a", "b"], n=2, size=16, channels=1)
    with pytest.raises(UserError, match="has no 'val' split"):
        load_split(DataConfig(folder=flat, size=16), "val")


def test_unreadable_image_is_named(tmp_path):
    root = write_class_folders(tmp_path / "imgs", ["a", "b"], n=2, size=16, channels=1)
    broken = root / "b" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png: unreadable image"):
        load_split(DataConfig(folder=root, size=16), "train")


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares width x height grayscale pixels but holds almost no data: opening reads the size, no decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [8001, 25000])  # past synthaug's budget; past PIL's decompression-bomb limit too
def test_an_image_beyond_the_pixel_budget_is_refused_in_one_line(tmp_path, side):
    root = write_class_folders(tmp_path / "imgs", ["a", "b"], n=2, size=16, channels=1)
    png_header_only(root / "b" / "huge.png", side, 8000)
    shape = f"{side} x 8000 pixels, " if side == 8001 else ""  # PIL refuses the larger one as it opens it, before its size is read
    with pytest.raises(UserError, match=rf"^\S*huge\.png: {shape}more than synthaug reads \(64,000,000 pixels, e\.g\. 8000 x 8000\); "
                                        r"downscale it first$") as err:
        load_split(DataConfig(folder=root, size=16), "train")
    assert "\n" not in str(err.value)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        load_split(DataConfig(folder=tmp_path / "empty", size=16), "train")


def test_classes_by_index_or_name(breast_root):
    assert resolve_classes(DataConfig(medmnist="breastmnist", root=breast_root, classes=["malignant"])) == [0]
    assert resolve_classes(DataConfig(medmnist="breastmnist", root=breast_root, classes=[1, 0])) == [0, 1]
    with pytest.raises(UserError, match="data.classes: no class 'benign'"):
        resolve_classes(DataConfig(medmnist="breastmnist", classes=["benign"]))
    with pytest.raises(UserError, match="data.classes: no class 7"):
        resolve_classes(DataConfig(medmnist="breastmnist", classes=[7]))
    assert class_names(DataConfig(medmnist="pathmnist"))[0] == "adipose"


def test_subsets_are_stratified_reproducible_and_nested():
    labels = np.repeat(np.arange(3), [50, 80, 20])
    small = subset_indices(labels, SubsetConfig(per_class=5, seed=3), [0, 1, 2])
    assert np.bincount(labels[small]).tolist() == [5, 5, 5]
    assert np.array_equal(small, subset_indices(labels, SubsetConfig(per_class=5, seed=3), [0, 1, 2]))
    large = subset_indices(labels, SubsetConfig(per_class=10, seed=3), [0, 1, 2])
    assert set(small) <= set(large)
    other = subset_indices(labels, SubsetConfig(per_class=5, seed=4), [0, 1, 2])
    assert not np.array_equal(small, other)
    frac = subset_indices(labels, SubsetConfig(fraction=0.1, seed=0), [0, 1, 2])
    assert np.bincount(labels[frac]).tolist() == [5, 8, 2]
    assert subset_indices(labels, None, [1]).tolist() == list(range(50, 130))
    with pytest.raises(UserError, match="data.subset.per_class: 30 exceeds the 20 training images of class 2"):
        subset_indices(labels, SubsetConfig(per_class=30), [0, 1, 2])


def test_tensor_round_trip_is_exact():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    tensor = to_model_tensor(images)
    assert tensor.shape == (3, 3, 8, 8) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(to_uint8(tensor), images)


def test_a_truncated_npz_is_named(tmp_path):
    path = write_medmnist_npz(tmp_path, "breastmnist", classes=2, channels=1)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UserError, match="breastmnist.npz: not a readable npz file .*download it again"):
        load_split(DataConfig(medmnist="breastmnist", root=tmp_path), "train")
