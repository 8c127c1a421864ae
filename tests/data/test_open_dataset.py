"""open_dataset: one entry point, the format told by the layout, one sample form for all."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import mtdense.data
from mtdense.data.cityscapes import CityscapesDataset
from mtdense.data.description import DatasetInfo
from mtdense.data.folder import FolderDataset
from mtdense.data.nyuv2 import NYUv2Dataset
from mtdense.data.open import detect_format, open_dataset
from mtdense.data.labels import TRAIN_CLASS_NAMES

H, W = 24, 32


def small_folder(root: Path) -> Path:
    """Two frames: one with mask and depth, one with nothing but its image."""
    rng = np.random.default_rng(0)
    for sub in ("images/train", "masks/train", "depth/train"):
        (root / sub).mkdir(parents=True)
    (root / "dataset.yaml").write_text("classes: [floor, wall, person]\n")
    for name in ("f0", "f1"):
        assert cv2.imwrite(str(root / "images" / "train" / f"{name}.png"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    assert cv2.imwrite(str(root / "masks" / "train" / "f0.png"), rng.integers(0, 3, (H, W)).astype(np.uint8))
    assert cv2.imwrite(str(root / "depth" / "train" / "f0.png"), rng.integers(0, 5000, (H, W)).astype(np.uint16))
    return root


def small_nyu(root: Path) -> Path:
    rng = np.random.default_rng(1)
    arrays = {"image": rng.random((H, W, 3)), "label": rng.integers(-1, 13, (H, W)).astype(float),
              "depth": rng.random((H, W, 1)) * 5, "normal": np.tile([0.0, 0.0, 1.0], (H, W, 1))}
    for split in ("train", "val"):
        for folder, array in arrays.items():
            (root / split / folder).mkdir(parents=True)
            np.save(root / split / folder / "0.npy", array)
    return root


def _form(sample: dict) -> dict:
    """Key -> (dtype, number of dimensions) of the arrays."""
    return {k: (v.dtype, v.ndim) for k, v in sample.items() if isinstance(v, np.ndarray)}


def test_each_format_is_detected_and_opened(tmp_path, hand_tree):
    folder = small_folder(tmp_path / "mine")
    nyu = small_nyu(tmp_path / "nyu")
    assert (detect_format(hand_tree.root), detect_format(folder), detect_format(nyu)) == ("cityscapes", "folder", "nyuv2")

    city = open_dataset(hand_tree.root, "train")
    assert isinstance(city, CityscapesDataset) and len(city) == 3
    assert city.classes == TRAIN_CLASS_NAMES and city.info == DatasetInfo.cityscapes()
    assert open_dataset(hand_tree.root, "val", depth_source=None).info.tasks == ("seg",)

    mine = open_dataset(folder, "train")
    assert isinstance(mine, FolderDataset) and mine.classes == ["floor", "wall", "person"]
    assert mine.info.tasks == ("seg", "depth") and len(mine) == 2

    nyuv2 = open_dataset(nyu, "val", format="nyuv2")
    assert isinstance(nyuv2, NYUv2Dataset) and len(nyuv2.classes) == 13

    # one sample form: image uint8 HxWx3, seg uint8 HxW, depth float32 HxW (normals float32 HxWx3)
    common = {"image": (np.uint8, 3), "seg": (np.uint8, 2), "depth": (np.float32, 2)}
    assert _form(city[0]) == common
    assert _form(mine[1]) == common and (mine[1]["seg"] == 255).all() and (mine[1]["depth"] == 0).all()
    assert _form(nyuv2[0]) == {**common, "normals": (np.float32, 3)}
    for sample in (city[0], mine[0], nyuv2[0]):
        assert isinstance(sample["name"], str) and sample["paths"]["image"]


def test_transform_and_cache_are_passed_through(tmp_path):
    folder = small_folder(tmp_path / "mine")
    ds = open_dataset(folder, "train", transform=lambda s: {"n": s["name"]}, cache_in_memory=True)
    assert ds[0] == {"n": "f0"} and ds._cache is not None


def test_lazy_export_from_the_package():
    assert mtdense.data.open_dataset is open_dataset and mtdense.data.DatasetInfo is DatasetInfo
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mtdense.data.nothing  # noqa: B018


def test_kitti_is_detected_by_any_of_its_folders(tmp_path):
    for marker in ("raw", "data_depth_annotated", "data_semantics"):
        (tmp_path / marker).mkdir(parents=True)
        assert detect_format(tmp_path) == "kitti"
        (tmp_path / marker).rmdir()
    (tmp_path / "raw").mkdir()
    with pytest.raises(ValueError, match=r"kitti split 'train' has no frames \(looked in .*data_depth_annotated/train\)"):
        open_dataset(tmp_path, "train")


def test_unknown_layout_format_or_option(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match=r"not a dataset layout mtdense knows; looked for dataset\.yaml \(folder format\), "
                                         r"leftImg8bit/ \(Cityscapes\), SPLIT/image/\*\.npy \(preprocessed NYUv2\) and raw/, "
                                         r"data_depth_annotated/, data_semantics/ \(KITTI\)") as info:
        open_dataset(tmp_path, "train")
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match=r"unknown dataset format 'voc'; known: auto, cityscapes, folder, nyuv2, kitti"):
        open_dataset(tmp_path, "train", format="voc")
    folder = small_folder(tmp_path / "mine")
    with pytest.raises(ValueError, match=r"the folder format takes no depth_source; its options: transform, "
                                         r"cache_in_memory, tasks"):
        open_dataset(folder, "train", depth_source="disparity")
    with pytest.raises(FileNotFoundError, match=r"images has no images/ folder"):  # the format named, not detected
        open_dataset(folder / "images", "train", format="folder")
    (folder / "dataset.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset\.yaml: no dataset description"):
        open_dataset(folder, "train", format="folder")
