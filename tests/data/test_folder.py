"""The folder format: exact values read back, missing labels as "no label", every bad input named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mtdense.data.folder import FolderDataset, folder_tasks, list_folder_frames, read_mask
from mtdense.data.transforms import EvalTransform

H, W = 24, 32
CLASSES = ["floor", "wall", "person", "chair", "table"]


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write an RGB (converted to BGR), grey or 16-bit array with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(array)
    assert cv2.imwrite(str(path), cv2.cvtColor(a, cv2.COLOR_RGB2BGR) if a.ndim == 3 else a)
    return path


def encode_normals(n: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((n + 1.0) * 127.5), 0, 255).astype(np.uint8)


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """The expected reading: rgb / 127.5 - 1, renormalised; (0, 0, 0) -> 0."""
    n = rgb.astype(np.float64) / 127.5 - 1
    out = n / np.linalg.norm(n, axis=2, keepdims=True)
    out[~rgb.any(axis=2)] = 0
    return out.astype(np.float32)


def frame_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, len(CLASSES), (H, W)).astype(np.uint8)
    mask[0, :5] = 255
    depth = rng.integers(1, 40000, (H, W)).astype(np.uint16)
    depth[1, :3] = 0
    n = rng.normal(size=(H, W, 3))
    normals = encode_normals(n / np.linalg.norm(n, axis=2, keepdims=True))
    normals[2, :4] = 0
    return {"image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "mask": mask, "depth": depth, "normals": normals}


def write_frame(root: Path, split: str, name: str, arrays: dict[str, np.ndarray], labels=("mask", "depth", "normals"),
                suffix: str = ".png") -> dict[str, Path]:
    files = {"image": write_png(root / "images" / split / f"{name}{suffix}", arrays["image"])}
    folders = {"mask": "masks", "depth": "depth", "normals": "normals"}
    for label in labels:
        files[label] = write_png(root / folders[label] / split / f"{name}.png", arrays[label])
    return files


def write_tree(root: Path, yaml_text: str = f"classes: {CLASSES}\n") -> dict[str, dict]:
    """train: a (all labels), b (mask only, JPEG image), c (depth only), d (no labels); val: e (all)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(yaml_text)
    frames = {}
    for i, (split, name, labels, suffix) in enumerate([
        ("train", "a", ("mask", "depth", "normals"), ".png"), ("train", "b", ("mask",), ".jpg"),
        ("train", "c", ("depth",), ".png"), ("train", "d", (), ".png"), ("val", "e", ("mask", "depth", "normals"), ".png"),
    ]):
        arrays = frame_arrays(i)
        frames[name] = {"arrays": arrays, "files": write_frame(root, split, name, arrays, labels, suffix)}
    return frames


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "mine"
    return root, write_tree(root)


def test_exact_values_read_back(tree):
    root, frames = tree
    ds = FolderDataset(root, "train")
    assert ds.classes == CLASSES and ds.info.format == "folder" and ds.info.tasks == ("seg", "depth", "normals")
    assert [f.name for f in ds.frames] == ["a", "b", "c", "d"] and len(ds) == 4
    s = ds[0]
    a = frames["a"]["arrays"]
    assert s["image"].dtype == np.uint8 and s["image"].shape == (H, W, 3)
    np.testing.assert_array_equal(s["image"], a["image"])
    assert s["seg"].dtype == np.uint8
    np.testing.assert_array_equal(s["seg"], a["mask"])
    assert s["depth"].dtype == np.float32
    np.testing.assert_array_equal(s["depth"], (a["depth"] / 256.0).astype(np.float32))
    assert s["depth"][1, 0] == 0
    assert s["normals"].dtype == np.float32 and s["normals"].shape == (H, W, 3)
    np.testing.assert_allclose(s["normals"], decode_normals(a["normals"]), atol=1e-6)
    valid = s["normals"].any(axis=2)
    assert not valid[2, :4].any() and valid.sum() == H * W - 4
    np.testing.assert_allclose(np.linalg.norm(s["normals"][valid], axis=1), 1.0, atol=1e-6)
    assert s["name"] == "a"
    assert s["paths"] == {"image": str(frames["a"]["files"]["image"]), "label": str(frames["a"]["files"]["mask"]),
                          "depth": str(frames["a"]["files"]["depth"]), "normals": str(frames["a"]["files"]["normals"])}
    jpeg = ds[1]["image"]  # lossy: what the decoder gives, in RGB order
    np.testing.assert_array_equal(jpeg, cv2.imread(str(frames["b"]["files"]["image"]))[..., ::-1])


def test_missing_labels_are_filled_with_no_label_and_collate(tree):
    root, frames = tree
    ds = FolderDataset(root, "train")
    b, c, d = ds[1], ds[2], ds[3]
    np.testing.assert_array_equal(b["seg"], frames["b"]["arrays"]["mask"])
    assert (c["seg"] == 255).all() and (d["seg"] == 255).all() and c["seg"].dtype == np.uint8
    np.testing.assert_array_equal(c["depth"], (frames["c"]["arrays"]["depth"] / 256.0).astype(np.float32))
    assert (b["depth"] == 0).all() and b["depth"].dtype == np.float32
    assert not b["normals"].any() and b["normals"].shape == (H, W, 3) and b["normals"].dtype == np.float32
    assert b["paths"]["depth"] == "" and d["paths"] == {"image": str(frames["d"]["files"]["image"]), "label": "",
                                                          "depth": "", "normals": ""}
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, H, W, 3) and batch["seg"].shape == (4, H, W)
    assert batch["normals"].shape == (4, H, W, 3) and batch["paths"]["label"][3] == ""
    # today's transforms keep seg and depth of a 5-class sample and batch them
    t = next(iter(DataLoader(FolderDataset(root, "train", transform=EvalTransform()), batch_size=4)))
    assert t["seg"].dtype == torch.int64 and (t["seg"][2] == 255).all() and (t["depth"][1] == 0).all()


def test_tasks_follow_the_label_folders_and_can_be_chosen(tmp_path, tree):
    root, frames = tree
    assert folder_tasks(root) == ("seg", "depth", "normals")
    ds = FolderDataset(root, "val", tasks=["depth", "seg"])
    assert ds.info.tasks == ("seg", "depth") and set(ds[0]) == {"image", "seg", "depth", "name", "paths"}
    only = tmp_path / "only_masks"
    (only / "dataset.yaml").parent.mkdir()
    (only / "dataset.yaml").write_text("classes: [a, b]\n")
    arrays = frame_arrays(0)
    arrays["mask"] = arrays["mask"] % 2
    write_frame(only, "train", "x", arrays, labels=("mask",))
    (only / "depth" / "train").mkdir(parents=True)  # an empty folder is no task
    ds = FolderDataset(only, "train")
    assert ds.info.tasks == ("seg",) and set(ds[0]) == {"image", "seg", "name", "paths"}
    with pytest.raises(ValueError, match=r"no labels for normals \(no PNG in normals/\)"):
        FolderDataset(only, "train", tasks=["seg", "normals"])


def test_ignore_index_and_depth_scale_and_palette_masks(tmp_path):
    root = tmp_path / "custom"
    root.mkdir()
    (root / "dataset.yaml").write_text("classes: [sky, ground, tree]\ncolors: [[0, 0, 255], [0, 255, 0], [255, 0, 0]]\n"
                                       "ignore_index: 9\ndepth_scale: 1000\n")
    arrays = frame_arrays(3)
    mask = arrays["mask"] % 3
    mask[5, :7] = 9
    write_png(root / "images" / "train" / "p.png", arrays["image"])
    write_png(root / "depth" / "train" / "p.png", arrays["depth"])
    pal = Image.fromarray(mask, mode="P")  # a palette PNG keeps its indices
    pal.putpalette([0, 0, 255, 0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 9))
    (root / "masks" / "train").mkdir(parents=True)
    pal.save(root / "masks" / "train" / "p.png")
    ds = FolderDataset(root, "train")
    assert ds.info.colors == ((0, 0, 255), (0, 255, 0), (255, 0, 0)) and ds.info.ignore_index == 9
    s = ds[0]
    expected = np.where(mask == 9, 255, mask)
    np.testing.assert_array_equal(s["seg"], expected)
    np.testing.assert_array_equal(s["depth"], (arrays["depth"] / 1000.0).astype(np.float32))
    # 255 is a class value nowhere here: with ignore_index 9 it is an error
    mask[0, 0] = 255
    write_png(root / "masks" / "train" / "p.png", mask)
    with pytest.raises(ValueError, match=r"p\.png: mask values 255 on 1 pixels are not class indices 0\.\.2 nor the "
                                         r"ignore index 9"):
        ds = FolderDataset(root, "train")
        ds[0]


def test_cache_in_memory_returns_copies(tree):
    root, _ = tree
    ds = FolderDataset(root, "train", cache_in_memory=True)
    first = ds[0]
    first["seg"][:] = 1
    first["paths"]["image"] = "changed"
    again = ds[0]
    assert not (again["seg"] == 1).all() and again["paths"]["image"] != "changed"
    assert ds._cache is not None and len(ds._cache) == 1


# --- bad inputs: each error names its file -------------------------------------------------------

def test_mask_without_its_image(tree):
    root, frames = tree
    stray = write_png(root / "masks" / "train" / "zz.png", frames["a"]["arrays"]["mask"])
    with pytest.raises(ValueError, match="no image zz") as info:
        FolderDataset(root, "train")
    assert str(stray) in str(info.value)
    assert FolderDataset(root, "val")  # the other split is fine


def test_two_problems_counted_and_layout_errors(tree):
    root, frames = tree
    write_png(root / "masks" / "train" / "zz.png", frames["a"]["arrays"]["mask"])
    jpeg_mask = root / "masks" / "train" / "c.jpg"
    assert cv2.imwrite(str(jpeg_mask), frames["a"]["arrays"]["mask"])
    with pytest.raises(ValueError, match=r"c\.jpg: masks/ files must be PNG .*\(1 more problems: run 'mtdense data check"):
        list_folder_frames(root, "train")
    jpeg_mask.unlink()
    (root / "masks" / "train" / "zz.png").unlink()
    write_png(root / "images" / "train" / "a.jpg", frames["a"]["arrays"]["image"])
    with pytest.raises(ValueError, match=r"a\.png: a second image named 'a' \(beside a\.jpg\)"):
        list_folder_frames(root, "train")


def test_mask_value_out_of_range(tree):
    root, frames = tree
    mask = frames["a"]["arrays"]["mask"].copy()
    mask[3, 3], mask[4, 4], mask[5, 5] = 5, 7, 7
    write_png(frames["a"]["files"]["mask"], mask)
    ds = FolderDataset(root, "train")
    with pytest.raises(ValueError, match=r"mask values 5, 7 on 3 pixels are not class indices 0\.\.4") as info:
        ds[0]
    assert str(frames["a"]["files"]["mask"]) in str(info.value) and "dataset.yaml" in str(info.value)


@pytest.mark.parametrize("label", ["mask", "depth", "normals"])
def test_size_mismatch(tree, label):
    root, frames = tree
    write_png(frames["a"]["files"][label], frames["a"]["arrays"][label][:20])
    with pytest.raises(ValueError, match=r"20x32 \(H x W\) but its image .*a\.png is 24x32") as info:
        FolderDataset(root, "train")[0]
    assert str(info.value).startswith(str(frames["a"]["files"][label]))


def test_depth_png_that_is_not_16_bit(tree):
    root, frames = tree
    path = frames["c"]["files"]["depth"]
    write_png(path, (frames["c"]["arrays"]["depth"] // 256).astype(np.uint8))
    with pytest.raises(ValueError, match=r"a uint8 image with 1 channel, not a 16-bit single-channel depth PNG") as info:
        FolderDataset(root, "train")[2]
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("what", ["image", "mask", "depth", "normals"])
def test_a_file_that_does_not_decode(tree, what):
    root, frames = tree
    path = frames["a"]["files"][what]
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="cannot decode|truncated") as info:
        FolderDataset(root, "train")[0]
    assert str(path) in str(info.value)


def test_colour_mask_and_non_unit_normals(tree):
    root, frames = tree
    write_png(frames["a"]["files"]["mask"], np.stack([frames["a"]["arrays"]["mask"]] * 3, axis=2))
    with pytest.raises(ValueError, match=r"a RGB image, not one 8-bit channel of class indices"):
        read_mask(frames["a"]["files"]["mask"])
    normals = frames["e"]["arrays"]["normals"].copy()
    normals[6, 7] = (128, 128, 128)  # grey meant as "invalid": no unit vector
    write_png(frames["e"]["files"]["normals"], normals)
    with pytest.raises(ValueError, match=r"1 pixels encode no unit vector \(e\.g\. rgb \(128, 128, 128\) at row 6, "
                                         r"column 7\)") as info:
        FolderDataset(root, "val")[0]
    assert str(frames["e"]["files"]["normals"]) in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("classes: [a, b\n", r"not readable YAML"),
    ("", r"the file is empty"),
    ("- a\n- b\n", r"must be a mapping of keys"),
    ("classes: [a, b]\ncolours: [[1, 2, 3], [4, 5, 6]]\n", r"'colours' is not a known key \(did you mean 'colors'\?\)"),
    ("colors: [[1, 2, 3]]\n", r"'classes' is missing"),
    ("classes: a\n", r"'classes' must be a non-empty list of class names"),
    ("classes: []\n", r"'classes' must be a non-empty list"),
    ("classes: [a, yes, c]\n", r"'classes' entry 1 is True \(bool\), not a string; quote it"),
    ("classes: [a, b, a]\n", r"'classes' name 'a' appears twice \(entries 0 and 2\)"),
    ("classes: [a, b]\ncolors: [[1, 2, 3]]\n", r"'colors' has 1 entries but there are 2 classes"),
    ("classes: [a, b]\ncolors: [[1, 2, 3], [4, 5, 256]]\n", r"'colors' entry 1 is \[4, 5, 256\]; each colour is"),
    ("classes: [a, b]\ncolors: [[1, 2, 3], [4, 5]]\n", r"'colors' entry 1 is \[4, 5\]"),
    ("classes: [a, b, c]\nignore_index: 2\n", r"'ignore_index' is 2; it must be an integer from 3"),
    ("classes: [a, b]\nignore_index: 256\n", r"'ignore_index' is 256"),
    ("classes: [a, b]\ndepth_scale: 0\n", r"'depth_scale' is 0; it must be a number > 0"),
    ("classes: [a, b]\ndepth_scale: '256'\n", r"'depth_scale' is '256'"),
])
def test_broken_dataset_yaml(tree, text, message):
    root, _ = tree
    (root / "dataset.yaml").write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        FolderDataset(root, "train")
    assert str(info.value).startswith(str(root / "dataset.yaml"))


def test_missing_root_yaml_split_or_images(tmp_path, tree):
    root, _ = tree
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderDataset(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"images/test does not exist; splits under .*: train, val"):
        FolderDataset(root, "test")
    (root / "images" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"images/empty: no images in this split"):
        FolderDataset(root, "empty")
    (root / "dataset.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset\.yaml: no dataset description"):
        FolderDataset(root, "train")
