"""``mtdense data teacher --method seg-onnx``: a 10-class ONNX teacher mapped onto a dataset's 5
classes by a class map, kept where its mapped softmax probability reaches the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from folder_scenes import TenClasses, TwoInputs, export, make_dataset
from mtdense.cli import main
from mtdense.data.folder import mask_to_seg, read_folder_info, read_mask
from mtdense.data.image import read_image, normalize_images
from mtdense.teachers.seg import ClassMap, confident_labels, map_scores

CLASSES = ("road", "car", "person", "sky", "building")
TEACHER = [f"t{i}" for i in range(10)]
MAP = {"t0": "road", "t1": "road", "t2": "car", 3: "car", "t4": "person", "t5": "sky", "t6": "building", "t7": None}


def write_map(path: Path, mapping=MAP, teacher_classes=TEACHER) -> Path:
    data = {"map": mapping} if teacher_classes is None else {"teacher_classes": teacher_classes, "map": mapping}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_class_map_by_name_and_index(tmp_path):
    cm = ClassMap.from_yaml(write_map(tmp_path / "m.yaml"), CLASSES)
    assert cm.targets == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 3, 6: 4}
    m = cm.matrix(10)
    assert m.shape == (6, 10) and (m.sum(axis=0) == 1).all()
    assert m[5].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]  # t7 (null), t8, t9: unmapped
    assert cm.describe()["map"] == {"t0": "road", "t1": "road", "t2": "car", "t3": "car", "t4": "person", "t5": "sky",
                                    "t6": "building"}


@pytest.mark.parametrize("mapping, teacher_classes, message", [
    ({"t0": "tree"}, TEACHER, r"map entry 't0': 'tree' is not a class of the dataset; its classes are road, car"),
    ({"t11": "road"}, TEACHER, r"map key 't11' is not a teacher class"),
    ({12: "road"}, TEACHER, r"map key 12 is no teacher class index \(0\.\.9\)"),
    ({"t0": "road"}, None, r"map key 't0' names a teacher class, but the file has no 'teacher_classes'"),
    ({"t3": "road", 3: "car"}, TEACHER, r"teacher class 3 \(index 3\) is mapped twice"),
    ({}, TEACHER, r"'map' must be a non-empty mapping"),
])
def test_class_map_errors_name_the_file_and_the_entry(tmp_path, mapping, teacher_classes, message):
    path = write_map(tmp_path / "m.yaml", mapping, teacher_classes)
    with pytest.raises(ValueError, match=rf"{path}: {message}"):
        ClassMap.from_yaml(path, CLASSES)
    (tmp_path / "k.yaml").write_text("teacher_class: [a]\nmap: {a: road}\n")
    with pytest.raises(ValueError, match="'teacher_class' is not a key of a class map"):
        ClassMap.from_yaml(tmp_path / "k.yaml", CLASSES)


def test_mapped_probabilities_sum_per_dataset_class():
    cm = ClassMap(path=None, teacher_classes=None, targets={0: 0, 1: 1, 2: 1}, dataset_classes=("a", "b"))
    # Four pixels of three teacher classes (+ one unmapped, index 3).
    p = np.array([[0.7, 0.1, 0.2, 0.1], [0.1, 0.3, 0.2, 0.1], [0.1, 0.3, 0.2, 0.1], [0.1, 0.3, 0.4, 0.7]],
                 np.float32).reshape(4, 1, 4)
    mapped = map_scores(p, cm)
    np.testing.assert_allclose(mapped[:, 0], [[0.7, 0.1, 0.2, 0.1], [0.2, 0.6, 0.4, 0.2], [0.1, 0.3, 0.4, 0.7]],
                               rtol=1e-6)
    labels, conf = confident_labels(mapped, 0.5)
    # 0: a at 0.7; 1: b at 0.6 (0.3 + 0.3); 2: a tie of b and unmapped at 0.4, under 0.5; 3: unmapped wins.
    assert labels[0].tolist() == [0, 1, 255, 255]
    np.testing.assert_allclose(conf[0], [0.7, 0.6, 0.4, 0.7], rtol=1e-6)


@pytest.fixture(scope="module")
def ten(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    net = TenClasses().eval()
    return net, export(net, d / "ten.onnx")


def reference(net: torch.nn.Module, image: Path, threshold: float) -> np.ndarray:
    """What the teacher must write, from the PyTorch module: softmax, summed per dataset class."""
    with torch.no_grad():
        p = net(normalize_images([read_image(image)])).softmax(1)[0].numpy()
    lut = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 3, 6: 4}
    mapped = np.zeros((6, *p.shape[1:]), np.float64)
    for t in range(10):
        mapped[lut.get(t, 5)] += p[t]
    best = mapped.argmax(0)
    conf = mapped.max(0)
    return np.where((best < 5) & (conf >= threshold), best, 255).astype(np.uint8)


def test_seg_teacher_writes_masks_of_the_dataset_classes(tmp_path, ten, capsys):
    net, onnx = ten
    root = tmp_path / "ds"
    make_dataset(root, greys=[30, 140, 220], classes=CLASSES, extra_yaml={"ignore_index": 250})
    cmap = write_map(tmp_path / "map.yaml")
    argv = ["data", "teacher", str(root), "--method", "seg-onnx", "--model", str(onnx), "--class-map", str(cmap),
            "--threshold", "0.6", "--quiet"]
    assert main(argv) == 0
    info = read_folder_info(root)
    counts = np.zeros(5, np.int64)
    kept = total = 0
    for name in ("f0", "f1", "f2"):
        out = root / "masks_teacher" / "train" / f"{name}.png"
        raw = read_mask(out)
        want = reference(net, root / "images" / "train" / f"{name}.png", 0.6)
        np.testing.assert_array_equal(raw, np.where(want == 255, 250, want))  # the dataset's ignore index in the file
        seg = mask_to_seg(raw, info, out)
        np.testing.assert_array_equal(seg, want)
        counts += np.bincount(want[want < 5], minlength=5)
        kept += int((want < 5).sum())
        total += want.size
    assert 0 < kept < total  # the threshold keeps some pixels and drops others
    s = json.loads((root / "masks_teacher" / "train_summary.json").read_text())
    assert s["task"] == "seg" and s["written"] == 3 and s["coverage"]["seg"] == pytest.approx(kept / total)
    assert s["class_shares"] == pytest.approx({c: n / kept for c, n in zip(CLASSES, counts) if n})
    assert s["teacher"]["map"]["t3"] == "car" and s["teacher"]["threshold"] == 0.6
    assert main(argv) == 0 and json.loads((root / "masks_teacher" / "train_summary.json").read_text())["kept"] == 3


def test_seg_teacher_refusals_name_the_file(tmp_path, ten, capsys):
    net, onnx = ten
    root = tmp_path / "ds"
    make_dataset(root, greys=[30], classes=CLASSES)
    base = ["data", "teacher", str(root), "--method", "seg-onnx", "--quiet"]
    bad = write_map(tmp_path / "bad.yaml", {"t0": "road", "t2": "bicycle"})
    assert main([*base, "--model", str(onnx), "--class-map", str(bad)]) == 2
    assert f"{bad}: map entry 't2': 'bicycle' is not a class of the dataset" in capsys.readouterr().err
    nine = write_map(tmp_path / "nine.yaml", {"t0": "road"}, TEACHER[:9])
    assert main([*base, "--model", str(onnx), "--class-map", str(nine)]) == 2
    assert f"{onnx}: gives 10 class scores, but {nine} names 9 teacher classes" in capsys.readouterr().err
    assert main([*base, "--model", str(onnx)]) == 2
    assert "--method seg-onnx needs --class-map FILE" in capsys.readouterr().err
    two = export(TwoInputs(), tmp_path / "two.onnx", inputs=2)
    assert main([*base, "--model", str(two), "--class-map", str(write_map(tmp_path / "m.yaml"))]) == 2
    assert f"{two}: has 2 inputs" in capsys.readouterr().err
    assert main([*base, "--model", str(onnx), "--class-map", str(tmp_path / "m.yaml"), "--threshold", "1.5"]) == 2
    assert "--threshold is a softmax probability, 0..1" in capsys.readouterr().err
    assert not (root / "masks_teacher").exists()
