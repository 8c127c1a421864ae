"""Teachers on folder datasets: an mtdense model as the teacher (seg, depth, normals), stereo
teachers on right/ views, and what every folder teacher shares (outputs beside the real labels,
resume, refusals, unreadable frames)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from folder_scenes import MetricDepth, export, make_dataset, read_depth, write_png
from mtdense import create_model, load_model
from mtdense.cli import main
from mtdense.data.check import check_folder_dataset
from mtdense.data.folder import read_mask
from mtdense.data.image import normalize_images, read_image
from mtdense.data.labels import TRAIN_CLASS_NAMES
from mtdense.data.normals import read_normals_png
from mtdense.inference import Predictor
from mtdense.models.factory import save_checkpoint
from mtdense.teachers import SGBMTeacher
from mtdense.data.description import StereoRig

SIZE = (64, 96)


def teacher(root: Path, method: str, *extra: str) -> int:
    return main(["data", "teacher", str(root), "--method", method, "--quiet", *extra])


# -- an mtdense model as the teacher ------------------------------------------------------------------
def test_a_model_teacher_writes_its_confident_labels_and_its_depth(tmp_path, ckpt):
    root = tmp_path / "ds"
    make_dataset(root, greys=[20, 200], classes=TRAIN_CLASS_NAMES, size=SIZE)
    image = root / "images" / "train" / "f0.png"
    rgb = read_image(image)
    with torch.no_grad():
        p = load_model(ckpt)(normalize_images([rgb]))["seg"].softmax(1)[0]
    confidence, best = p.amax(0).numpy(), p.argmax(0).numpy()
    threshold = float(np.median(confidence))  # about half the pixels pass
    assert teacher(root, "model", "--model", str(ckpt), "--threshold", f"{threshold}", "--batch", "2") == 0
    mask = read_mask(root / "masks_model" / "train" / "f0.png")
    np.testing.assert_array_equal(mask, np.where(confidence >= threshold, best, 255))
    pred = Predictor(ckpt).predict(rgb)
    np.testing.assert_array_equal(mask[mask != 255], pred.seg[mask != 255])
    png = cv2.imread(str(root / "depth_model" / "train" / "f0.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png, np.rint(pred.depth.astype(np.float64) * 256).astype(np.uint16))
    s = json.loads((root / "masks_model" / "train_summary.json").read_text())
    assert s["outputs"] == {"seg": "masks_model", "depth": "depth_model"} and s["teacher"]["tasks"] == ["seg", "depth"]
    assert 0.3 < s["coverage"]["seg"] < 0.7 and s["coverage"]["depth"] == 1.0
    assert json.loads((root / "depth_model" / "train_summary.json").read_text())["task"] == "depth"


def test_class_balanced_thresholds_keep_a_share_of_every_class():
    from mtdense.teachers.seg import class_balanced_thresholds, confident_labels

    bins = 10
    hist = np.zeros((3, bins), np.int64)
    hist[0, 9] = 100  # a class the teacher is sure of: the global threshold
    hist[1, [2, 3, 4, 5]] = 25  # an unsure class: its upper half lies at >= 0.4
    thresholds = class_balanced_thresholds(hist, threshold=0.9, share=0.5)
    np.testing.assert_allclose(thresholds, [0.9, 0.4, 0.9])  # class 2 never predicted: the global one
    assert class_balanced_thresholds(hist, threshold=0.3, share=0.5)[1] == pytest.approx(0.3)  # never above the global
    mapped = np.array([[[0.95, 0.5]], [[0.03, 0.45]], [[0.01, 0.03]], [[0.01, 0.02]]], np.float32)  # 3 classes + unmapped
    labels, _ = confident_labels(mapped, np.array([0.9, 0.4, 0.9], np.float32))
    assert labels.tolist() == [[0, 255]]  # 0.5 for class 0 is under its 0.9
    labels, _ = confident_labels(mapped, np.array([0.9, 0.4, 0.4], np.float32))
    assert labels.tolist() == [[0, 255]]
    labels, _ = confident_labels(mapped, np.array([0.5, 0.4, 0.9], np.float32))
    assert labels.tolist() == [[0, 0]]


def test_a_model_teacher_with_a_class_share_keeps_part_of_every_class(tmp_path, ckpt, capsys):
    root = tmp_path / "ds"
    make_dataset(root, greys=[20, 200], classes=TRAIN_CLASS_NAMES, size=SIZE)
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "seg", "--threshold", "1", "--out", "strict") == 0
    assert json.loads((root / "masks_strict" / "train_summary.json").read_text())["coverage"]["seg"] == 0
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "seg", "--threshold", "1", "--class-share", "0.5") == 0
    summary = json.loads((root / "masks_model" / "train_summary.json").read_text())
    assert summary["teacher"]["class_share"] == 0.5 and len(summary["state"]["class_thresholds"]) == 19
    predicted, kept = np.zeros(19, np.int64), np.zeros(19, np.int64)
    for image in sorted((root / "images" / "train").glob("*.png")):
        pred = Predictor(ckpt).predict(read_image(image)).seg
        mask = read_mask(root / "masks_model" / "train" / image.name)
        assert (mask[mask != 255] == pred[mask != 255]).all()  # kept pixels are the model's argmax
        predicted += np.bincount(pred.ravel(), minlength=19)[:19]
        kept += np.bincount(mask[mask != 255].ravel(), minlength=19)[:19]
    present = predicted > 0
    assert present.sum() >= 2 and (kept[present] >= 0.45 * predicted[present]).all()  # at least about half of each
    assert kept.sum() < predicted.sum()  # and not everything: the least sure pixels stay unlabelled
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "depth", "--class-share", "0.5", "--out", "x") == 2
    assert "--class-share sets segmentation thresholds" in capsys.readouterr().err
    assert teacher(root, "model", "--model", str(ckpt), "--class-share", "0", "--out", "y") == 2
    assert "--class-share 0: the share of each class's pixels to keep" in capsys.readouterr().err


def test_a_model_with_other_classes_needs_a_class_map(tmp_path, ckpt, capsys):
    root = tmp_path / "ds"
    make_dataset(root, greys=[20], classes=("flat", "thing", "sky"), size=SIZE)
    assert teacher(root, "model", "--model", str(ckpt)) == 2
    assert f"{ckpt}: the model's classes (road, sidewalk" in capsys.readouterr().err
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "depth", "--out", "big") == 0
    assert (root / "depth_big" / "train" / "f0.png").is_file() and not (root / "masks_big").exists()
    cmap = tmp_path / "map.yaml"
    cmap.write_text(yaml.safe_dump({"map": {"road": "flat", "sidewalk": "flat", "car": "thing", "person": "thing",
                                            "sky": "sky"}}))
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "seg", "--class-map", str(cmap), "--threshold", "0") == 0
    mask = read_mask(root / "masks_model" / "train" / "f0.png")
    rgb = read_image(root / "images" / "train" / "f0.png")
    with torch.no_grad():
        p = load_model(ckpt)(normalize_images([rgb]))["seg"].softmax(1)[0].numpy()
    idx = {n: i for i, n in enumerate(TRAIN_CLASS_NAMES)}
    mapped = np.stack([p[idx["road"]] + p[idx["sidewalk"]], p[idx["car"]] + p[idx["person"]], p[idx["sky"]]])
    rest = 1.0 - mapped.sum(0)
    want = np.where(mapped.max(0) >= rest, mapped.argmax(0), 255)
    agree = mask == want
    close = np.abs(mapped.max(0) - rest) < 1e-5  # a tie within float rounding may go either way
    assert (agree | close).all() and set(np.unique(mask)) <= {0, 1, 2, 255}
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "normals") == 2
    assert f"{ckpt}: the model predicts seg, depth, not normals" in capsys.readouterr().err


def test_a_model_teacher_writes_normals(tmp_path):
    torch.manual_seed(0)
    model = create_model(tasks={"seg": 19, "depth": 1, "normals": 3}, decoder_channels=16)
    ckpt = save_checkpoint(model, tmp_path / "normals.pth")
    root = tmp_path / "ds"
    make_dataset(root, greys=[20], classes=("a", "b"), size=SIZE)
    assert teacher(root, "model", "--model", str(ckpt), "--tasks", "normals", "--out", "n") == 0
    out = root / "normals_n" / "train" / "f0.png"
    pred = Predictor(ckpt).predict(read_image(root / "images" / "train" / "f0.png"))
    np.testing.assert_array_equal(read_image(out), pred.normals_rgb())
    assert read_normals_png(out).shape == (*SIZE, 3)


# -- stereo teachers on a folder dataset --------------------------------------------------------------
def test_stereo_teachers_label_a_folder_dataset_with_right_views(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.yaml").write_text("classes: [a, b]\nstereo: {baseline: 0.5, fx: 100.0}\n")
    h, w, d = 48, 128, 8
    for i in range(3):
        noise = rng.integers(0, 256, (h, w + d, 3)).astype(np.float32)
        tex = np.clip(cv2.GaussianBlur(noise, (0, 0), 1.0) * 2 - 128, 0, 255).astype(np.uint8)
        left, right = tex[:, :w], tex[:, d:]  # a left pixel at x is seen at x - 8 in the right view
        write_png(root / "images" / "train" / f"f{i}.png", np.ascontiguousarray(left), rgb=True)
        if i < 2:
            write_png(root / "right" / "train" / f"f{i}.png", np.ascontiguousarray(right), rgb=True)
    assert teacher(root, "sgbm") == 1  # f2 has no right view
    assert f"skipped {root / 'images/train/f2.png'}: no right view" in capsys.readouterr().err
    sgbm = SGBMTeacher()
    for i in range(2):
        left = read_image(root / "images" / "train" / f"f{i}.png")
        right = read_image(root / "right" / "train" / f"f{i}.png")
        want = StereoRig(0.5, 100.0).depth(sgbm(left, right))
        got = read_depth(root / "depth_sgbm" / "train" / f"f{i}.png")
        np.testing.assert_allclose(got, np.rint(want * 256) / 256, atol=1e-6)
        assert np.median(got[got > 0]) == pytest.approx(0.5 * 100 / d, rel=0.01)  # 6.25 m
    s = json.loads((root / "depth_sgbm" / "train_summary.json").read_text())
    assert list(s["skipped"]["no_right"]) == ["f2"] and s["teacher"]["method"] == "sgbm"
    report = check_folder_dataset(root, progress=False)
    assert report.ok, report.summary()
    (root / "dataset.yaml").write_text("classes: [a, b]\n")
    assert teacher(root, "sgbm", "--out", "depth_s2") == 2
    assert f"{root / 'dataset.yaml'}: no 'stereo:' rig" in capsys.readouterr().err
    (root / "dataset.yaml").write_text("classes: [a, b]\nstereo: {baseline: -1, fx: 100}\n")
    assert teacher(root, "sgbm", "--out", "depth_s2") == 2
    assert "'stereo' baseline is -1, not a number > 0" in capsys.readouterr().err


# -- what every folder teacher shares -----------------------------------------------------------------
@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    return export(MetricDepth(), tmp_path_factory.mktemp("m") / "metric.onnx")


def test_outputs_never_go_where_they_do_not_belong(tmp_path, metric, capsys):
    root = tmp_path / "ds"
    make_dataset(root, greys=[10, 20], anchored=[False, False])
    args = ["--model", str(metric), "--metric", "--output", "depth"]
    for real in ("images", "masks", "depth", "normals", "right"):
        assert teacher(root, "mono-onnx", *args, "--out", real) == 2
        assert f"--out {real!r} is a folder of the real data" in capsys.readouterr().err
    assert teacher(root, "mono-onnx", *args, "--out", "../elsewhere") == 2
    assert "out must be a folder name under the dataset root" in capsys.readouterr().err
    foreign = root / "depth_user" / "train"
    write_png(foreign / "f0.png", np.ones((24, 40), np.uint16))
    assert teacher(root, "mono-onnx", *args, "--out", "depth_user") == 2
    assert f"{foreign}: holds PNGs that no teacher run recorded" in capsys.readouterr().err
    assert (foreign / "f0.png").read_bytes() == cv2.imencode(".png", np.ones((24, 40), np.uint16))[1].tobytes()
    assert teacher(root, "mono-onnx", *args, "--out", "labels_x") == 0
    cmap = tmp_path / "map.yaml"
    cmap.write_text("map: {0: road}\n")
    assert teacher(root, "seg-onnx", "--model", str(metric), "--class-map", str(cmap), "--out", "labels_x") == 2
    assert f"{root / 'labels_x'}: holds depth labels of a teacher, not seg" in capsys.readouterr().err
    assert teacher(root, "mono-onnx", *args, "--out", "labels_x", "--max-depth", "10") == 2
    assert "written by a teacher with other settings" in capsys.readouterr().err
    assert teacher(root, "mono-onnx", *args, "--out", "labels_x", "--max-depth", "10", "--overwrite") == 0
    assert read_depth(root / "labels_x" / "train" / "f0.png").max() <= 10


def test_an_unreadable_frame_is_skipped_by_name_and_the_others_labelled(tmp_path, metric, capsys):
    root = tmp_path / "ds"
    make_dataset(root, greys=[10, 20, 30], anchored=[False] * 3)
    broken = root / "images" / "train" / "f1.png"
    broken.write_bytes(broken.read_bytes()[:60])
    assert teacher(root, "mono-onnx", "--model", str(metric), "--metric", "--output", "depth", "--batch", "3") == 1
    assert f"skipped {broken}: cannot decode this image" in capsys.readouterr().err
    written = sorted(p.name for p in (root / "depth_mono" / "train").glob("*.png"))
    assert written == ["f0.png", "f2.png"]
    s = json.loads((root / "depth_mono" / "train_summary.json").read_text())
    assert list(s["skipped"]["unreadable"]) == ["f1"] and s["written"] == 2 and s["complete"]


def test_a_cityscapes_tree_takes_only_the_stereo_teachers(tmp_path, metric, capsys):
    (tmp_path / "city" / "leftImg8bit" / "train").mkdir(parents=True)
    assert teacher(tmp_path / "city", "mono-onnx", "--model", str(metric)) == 2
    assert "--method mono-onnx labels a folder dataset" in capsys.readouterr().err
