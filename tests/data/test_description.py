"""DatasetInfo: defaults, the Cityscapes description, plain-data round trip, checks by key."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mtdense.data.description import DatasetInfo, default_palette, read_dataset_yaml
from mtdense.data.labels import TRAIN_CLASS_NAMES, TRAIN_PALETTE


def test_defaults_and_palette():
    info = DatasetInfo(classes=["a", "b", "c"])
    assert (info.ignore_index, info.depth_scale, info.tasks, info.format, info.num_classes) == (255, 256.0, ("seg",),
                                                                                                 "folder", 3)
    np.testing.assert_array_equal(info.palette, TRAIN_PALETTE[:3])
    for k in (0, 1, 19, 20, 64, 255):
        p = default_palette(k)
        assert p.shape == (k, 3) and p.dtype == np.uint8
        assert len({tuple(c) for c in p.tolist()}) == k, "colours repeat"
        assert not any(c == [0, 0, 0] for c in p.tolist()), "black is kept for ignored pixels"
    np.testing.assert_array_equal(default_palette(40)[:19], TRAIN_PALETTE)
    np.testing.assert_array_equal(default_palette(40), default_palette(40))  # the same every time
    # distinct: beyond the Cityscapes colours no two of 64 are closer than 30 in RGB
    p = default_palette(64).astype(float)
    d = np.linalg.norm(p[:, None] - p[None], axis=2) + np.eye(64) * 1e9
    assert d[19:].min() > 30


def test_colorize_uses_the_palette_and_black_for_ignore():
    info = DatasetInfo(classes=["a", "b"], colors=[[10, 20, 30], [40, 50, 60]])
    out = info.colorize(np.array([[0, 1, 255, 7]], np.uint8))
    assert out.tolist() == [[[10, 20, 30], [40, 50, 60], [0, 0, 0], [0, 0, 0]]]


def test_cityscapes_description():
    info = DatasetInfo.cityscapes()
    assert list(info.classes) == TRAIN_CLASS_NAMES and info.num_classes == 19 and info.format == "cityscapes"
    np.testing.assert_array_equal(info.palette, TRAIN_PALETTE)
    assert info.tasks == ("seg", "depth") and DatasetInfo.cityscapes(tasks=["seg"]).tasks == ("seg",)


def test_plain_data_round_trip_through_a_weights_only_checkpoint():
    info = DatasetInfo(classes=["x", "y"], colors=[[1, 2, 3], [4, 5, 6]], ignore_index=7, depth_scale=1000,
                       tasks=["normals", "seg"], format="folder")
    d = info.to_dict()
    assert d == {"classes": ["x", "y"], "colors": [[1, 2, 3], [4, 5, 6]], "ignore_index": 7, "depth_scale": 1000.0,
                 "tasks": ["seg", "normals"], "format": "folder"}
    buf = io.BytesIO()
    torch.save({"dataset": d}, buf)
    buf.seek(0)
    back = DatasetInfo.from_dict(torch.load(buf, weights_only=True)["dataset"])
    assert back == info
    assert DatasetInfo.from_dict(DatasetInfo.cityscapes().to_dict()) == DatasetInfo.cityscapes()


@pytest.mark.parametrize("data, message", [
    ({"classes": ["a"], "colour": []}, r"ckpt: 'colour' is not a known key \(did you mean 'colors'\?\)"),
    ({"classes": ["a"], "tasks": ["seg", "edges"]}, r"ckpt: 'tasks' holds \['edges'\], not tasks"),
    ({"classes": ["a"], "tasks": "seg"}, r"ckpt: 'tasks' must be a list"),
    ({"classes": ["a"], "format": "voc"}, r"ckpt: 'format' is 'voc'; known formats: cityscapes, folder, nyuv2, kitti"),
    ({"classes": ["a", 3]}, r"ckpt: 'classes' entry 1 is 3 \(int\)"),
    ({"classes": ["a", " "]}, r"ckpt: 'classes' entry 1 is an empty name"),
    ({"classes": [str(i) for i in range(256)]}, r"ckpt: 'classes' has 256 names; at most 255"),
    ({"classes": ["a"], "ignore_index": True}, r"ckpt: 'ignore_index' is True"),
    ({"classes": ["a"], "depth_scale": float("nan")}, r"ckpt: 'depth_scale' is nan"),
    ({"classes": ["a"], "colors": [[1, 2, 3.5]]}, r"ckpt: 'colors' entry 0 is \[1, 2, 3.5\]"),
    ({"classes": ["a"], "colors": [[1, 2, -1]]}, r"ckpt: 'colors' entry 0 is \[1, 2, -1\]"),
    (["a"], r"ckpt: must be a mapping"),
])
def test_from_dict_names_the_source_and_key(data, message):
    with pytest.raises(ValueError, match=message):
        DatasetInfo.from_dict(data, source="ckpt")


def test_constructor_checks_too():
    with pytest.raises(ValueError, match=r"'ignore_index' is 1; it must be an integer from 2"):
        DatasetInfo(classes=["a", "b"], ignore_index=1)
    with pytest.raises(ValueError, match=r"'classes' must be a non-empty list"):
        DatasetInfo(classes="abc")


def test_read_dataset_yaml(tmp_path):
    path = tmp_path / "dataset.yaml"
    path.write_text("# my robot\nclasses: [floor, wall]\ncolors:\n  - [1, 2, 3]\n  - [4, 5, 6]\nignore_index: 2\n"
                    "depth_scale: 1000\n")
    info = read_dataset_yaml(path, tasks=["depth", "seg"])
    assert info == DatasetInfo(["floor", "wall"], [[1, 2, 3], [4, 5, 6]], 2, 1000.0, ("seg", "depth"), "folder")
    path.write_text("classes: [floor, wall]\ntasks: [seg]\n")  # the folders decide the tasks, not the file
    with pytest.raises(ValueError, match=r"dataset\.yaml: 'tasks' is not a known key"):
        read_dataset_yaml(path)
    with pytest.raises(FileNotFoundError, match="no dataset description"):
        read_dataset_yaml(tmp_path / "missing.yaml")
