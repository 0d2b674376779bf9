"""SynthDataset: medmnist-shaped items, ConcatDataset and DataLoader, selection, target_transform and provenance, the
per-class mixing helper, damaged folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import untrained_run
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from synthaug import SynthDataset, mix_real_synthetic
from synthaug.data.synthetic import to_tensor
from synthaug.core.errors import UserError
from synthaug.generation.generate import generate

SHARED_PNEUMONIA = Path("/work/shared/data/medmnist/pneumoniamnist.npz")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """6 + 6 generated 28 px grayscale images of classes 'normal' and 'pneumonia'."""
    root = tmp_path_factory.mktemp("synth")
    run = untrained_run(root, names=["normal", "pneumonia"], size=28)
    return generate(run.root, per_class=6, out=root / "syn", show_progress=False)


@pytest.fixture
def folder(synthetic, tmp_path) -> Path:
    """A private copy, for tests that damage it."""
    return Path(shutil.copytree(synthetic, tmp_path / "syn"))


class MedMNISTLike(Dataset):
    """What medmnist's datasets return: a PIL image and an int64 label array of shape (1,)."""

    def __init__(self, n: int, transform=None):
        self.images = np.random.default_rng(0).integers(0, 255, (n, 28, 28), dtype=np.uint8)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return (self.transform(img) if self.transform else img), np.array([i % 2], dtype=np.int64)


def real_dataset(transform=None) -> Dataset:
    """medmnist's own PneumoniaMNIST (val split) when the shared file is there, else a stand-in shaped like it."""
    if SHARED_PNEUMONIA.is_file():
        from medmnist import PneumoniaMNIST

        return PneumoniaMNIST(split="val", root=str(SHARED_PNEUMONIA.parent), transform=transform, download=False)
    return MedMNISTLike(20, transform)


def test_items_look_like_medmnist(synthetic):
    data = SynthDataset(synthetic)
    real_image, real_label = real_dataset()[0]
    image, label = data[0]
    assert isinstance(image, Image.Image) and image.mode == real_image.mode and image.size == real_image.size
    assert isinstance(label, np.ndarray) and label.dtype == real_label.dtype == np.int64 and label.shape == real_label.shape == (1,)
    assert len(data) == 12 and data.counts == {0: 6, 1: 6}
    assert data.labels.tolist() == [0] * 6 + [1] * 6 and data.class_names == ["normal", "pneumonia"]
    images, labels = data.to_numpy()
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8 and labels.tolist() == data.labels.tolist()
    assert np.array_equal(images[7, ..., 0], np.asarray(Image.open(data.files[7])))
    assert SynthDataset(synthetic, as_rgb=True)[0][0].mode == "RGB"


def test_selection(synthetic):
    assert SynthDataset(synthetic, classes=["pneumonia"]).labels.tolist() == [1] * 6
    assert SynthDataset(synthetic, classes=[0]).counts == {0: 6}
    few = SynthDataset(synthetic, per_class=2)
    assert [f.name for f in few.files] == ["0_000000.png", "0_000001.png", "1_000000.png", "1_000001.png"]
    with pytest.raises(UserError, match="no class 'covid'"):
        SynthDataset(synthetic, classes=["covid"])
    with pytest.raises(UserError, match="per_class: .* has only"):
        SynthDataset(synthetic, per_class=7)


def test_concat_with_medmnist_in_a_dataloader(synthetic):
    both = ConcatDataset([real_dataset(to_tensor), SynthDataset(synthetic, transform=to_tensor)])
    seen = 0
    for images, labels in DataLoader(both, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 28, 28) and 0 <= images.min() and images.max() <= 1
        assert labels.dtype == torch.int64 and labels.shape[1:] == (1,)
        seen += len(images)
    assert seen == len(both)


def test_mix_real_synthetic_adds_per_class(synthetic):
    real, syn = MedMNISTLike(20), SynthDataset(synthetic)  # 10 real images of each class; 6 synthetic ones of each
    mixed = mix_real_synthetic(real, syn, ratio=0.5)
    assert len(mixed) == 30 and mixed.datasets[0] is real
    picked = mixed.datasets[1].indices
    assert picked == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]  # the first 5 of each class: what the real+synthetic arm adds
    assert syn.labels[picked].tolist() == [0] * 5 + [1] * 5
    uneven = Subset(ConcatDataset([real, MedMNISTLike(4)]), list(range(20)) + [20, 22])  # 12 of class 0, 10 of class 1
    uneven = mix_real_synthetic(uneven, syn, 0.25)
    assert syn.labels[uneven.datasets[1].indices].tolist() == [0] * 3 + [1] * 3  # round(0.25 x 12), round(0.25 x 10)
    drawn = mix_real_synthetic(real, syn, 0.5, seed=3).datasets[1].indices
    assert sorted(syn.labels[drawn].tolist()) == [0] * 5 + [1] * 5 and drawn == mix_real_synthetic(real, syn, 0.5, seed=3).datasets[1].indices
    assert drawn != mix_real_synthetic(real, syn, 0.5, seed=4).datasets[1].indices
    fewer = mix_real_synthetic(real, syn, 0.25, seed=3).datasets[1].indices  # a prefix of each class's draw
    assert [i for i in fewer if syn.labels[i] == 0] == [i for i in drawn if syn.labels[i] == 0][:3]
    assert len(mix_real_synthetic(real, syn, 0.0)) == 20
    with pytest.raises(UserError, match="ratio 2: the synthetic set has 6 image.s. of class 0, 20 are needed"):
        mix_real_synthetic(real, syn, 2.0)


def test_target_transform_and_provenance(synthetic):
    data = SynthDataset(synthetic, target_transform=lambda label: int(label[0]) + 10)
    assert data[7][1] == 11 and data.provenance(7) == (True, -1) and data.provenance(-1).synthetic
    images, labels = next(iter(DataLoader(SynthDataset(synthetic, transform=to_tensor, target_transform=lambda y: int(y[0])), batch_size=12)))
    assert labels.tolist() == data.labels.tolist() and labels.shape == (12,)


def test_damaged_folders_name_the_file(folder):
    (folder / "pneumonia/1_000003.png").write_bytes(b"not a png")
    data = SynthDataset(folder)
    with pytest.raises(UserError, match=r"1_000003\.png: unreadable image"):
        data[9]
    (folder / "normal/0_000002.png").unlink()
    with pytest.raises(UserError, match=r"0_000002\.png: listed in metadata.csv but missing"):
        SynthDataset(folder)
    table = pd.read_csv(folder / "metadata.csv")
    table.loc[0, "label"] = 1
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match="metadata.csv: lists 5 images of class 0, manifest.json says 6"):
        SynthDataset(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(UserError, match=r"0_000000\.png has label 1 \(pneumonia\) but class_name 'normal'"):
        SynthDataset(folder)
    table.loc[0, "class_name"] = "pneumonia"
    table.to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match=r"0_000000\.png: metadata.csv gives it label 1"):
        SynthDataset(folder)
    table[["file_name", "label"]].to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match="missing column.*class_name"):
        SynthDataset(folder)
    (folder / "metadata.csv").unlink()
    with pytest.raises(UserError, match=r"metadata.csv: not found"):
        SynthDataset(folder)


def test_folders_that_lie_are_refused(folder):
    table = pd.read_csv(folder / "metadata.csv")
    (folder / "manifest.json").rename(folder / "manifest.keep")  # counts aside: each lie below must be caught on its own
    manifest = folder / "manifest.keep"

    def refused(rows: pd.DataFrame, message: str, keep_manifest: bool = False):
        rows.to_csv(folder / "metadata.csv", index=False)
        if keep_manifest:
            manifest.rename(folder / "manifest.json")
        try:
            with pytest.raises(UserError, match=message):
                SynthDataset(folder).verify()
        finally:
            if keep_manifest:
                (folder / "manifest.json").rename(manifest)

    refused(pd.concat([table, table.iloc[[0]]]), r"lists normal/0_000000\.png more than once")
    outside = table.copy()
    outside.loc[0, "file_name"] = "../../etc/0_000000.png"
    refused(outside, "leaves the folder")
    # a row whose PNG is another class's image: the PNG's own provenance says so
    swapped = table.copy()
    shutil.copy(folder / "pneumonia/1_000000.png", folder / "normal/0_000000.png")
    refused(swapped, r"0_000000\.png: its provenance disagrees with its metadata.csv row \(class: metadata 0, image 1", keep_manifest=True)
    # a PNG that is not the folder's own (no synthaug provenance) in a folder whose manifest says generate made it
    Image.new("L", (28, 28)).save(folder / "normal/0_000000.png")
    refused(table, "carries no synthaug provenance", keep_manifest=True)


def test_indices_and_arguments(synthetic):
    data = SynthDataset(synthetic)
    assert data[-1][1].shape == (1,) and data[-1][1][0] == data.labels[-1]
    with pytest.raises(IndexError):
        data[len(data)]
    with pytest.raises(UserError, match="per_class: expected a whole number >= 0, got 'abc'"):
        SynthDataset(synthetic, per_class="abc")
    assert (data.source_index == -1).all()  # drawn from noise: no source
    assert data.verify() == 12
