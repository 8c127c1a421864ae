"""Learning from an unlabelled recording, end to end through the CLI: a generated clip -> frames
(data frames) -> real labels on a third of the training frames -> a teacher trained on them labels
every frame (data teacher --method model) -> a few training steps on real + teacher labels
(data.sources, data.teacher_weight) -> evaluate on real labels only."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml

from mtdense.cli import main

H, W = 64, 96
CLASSES = ["road", "sky", "car"]
BGR = np.array([[90, 90, 90], [230, 160, 60], [40, 40, 220]], np.int16)  # road grey, sky blue, car red


def scene(i: int) -> np.ndarray:
    """Frame ``i`` as class indices: sky above a horizon that drifts, road below, a car that moves."""
    labels = np.zeros((H, W), np.uint8)
    horizon = 26 + (i % 5)
    labels[:horizon] = 1
    x0 = (7 * i) % (W - 24)
    labels[horizon - 6:horizon + 14, x0:x0 + 24] = 2
    return labels


def depth_of(labels: np.ndarray) -> np.ndarray:
    """Metres: the road nearer towards the bottom, the car at 6 m, no depth in the sky (0)."""
    rows = np.arange(H, dtype=np.float32)[:, None].repeat(W, 1)
    horizon = int((labels[:, 0] == 1).sum())
    depth = np.where(labels == 0, 60.0 / np.maximum(rows - horizon + 1, 1), 0.0)
    return np.where(labels == 2, 6.0, depth).astype(np.float32)


def make_clip(path: Path, first: int, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    assert writer.isOpened()
    rng = np.random.default_rng(first)
    for i in range(first, first + count):
        frame = BGR[scene(i)] + rng.integers(-12, 13, (H, W, 3))
        writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    writer.release()
    return path


def label_frames(root: Path, split: str, names: list[str], first: int) -> None:
    """The real labels of some frames (the clip's frames are numbered from ``first``)."""
    for name in names:
        i = first + int(name.rsplit("_", 1)[1])
        labels = scene(i)
        for folder, data in (("masks", labels), ("depth", np.round(depth_of(labels) * 256).astype(np.uint16))):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / folder / split / f"{name}.png"), data)


def train_args(out: Path, root: Path, *more: str) -> list[str]:
    return ["train", "synthetic_demo", "--out", str(out), "--set",
            "data.format=folder", f"data.root={root}", "data.generate=null", "data.cache_in_memory=false",
            "model.decoder_channels=16", f"stages.0.size=[{H}, {W}]", "stages.0.epochs=1", "stages.0.batch_size=2",
            "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
            "trainer.log_every_n_steps=1", "trainer.progress_bar=false", *more]


def test_video_frames_teacher_mixed_training_and_evaluation(tmp_path):
    root = tmp_path / "recording"
    assert main(["data", "frames", str(make_clip(tmp_path / "clips" / "drive.avi", 0, 9)), "--out", str(root),
                 "--split", "train", "--classes", *CLASSES, "--quiet"]) == 0
    assert main(["data", "frames", str(make_clip(tmp_path / "clips_val" / "drive.avi", 50, 4)), "--out", str(root),
                 "--split", "val", "--quiet"]) == 0
    train_names = sorted(p.stem for p in (root / "images" / "train").glob("*.png"))
    val_names = sorted(p.stem for p in (root / "images" / "val").glob("*.png"))
    assert len(train_names) == 9 and len(val_names) == 4
    labelled = train_names[::3]
    label_frames(root, "train", labelled, 0)
    label_frames(root, "val", val_names, 50)

    # a teacher trained on the labelled third labels every training frame
    assert main(train_args(tmp_path / "teacher", root)) == 0
    assert main(["data", "teacher", str(root), "--method", "model", "--model", str(tmp_path / "teacher" / "model.pth"),
                 "--split", "train", "--out", "teacher", "--threshold", "0", "--quiet"]) == 0
    for folder in ("masks_teacher", "depth_teacher"):
        assert sorted(p.stem for p in (root / folder / "train").glob("*.png")) == train_names
    masks = [cv2.imread(str(root / "masks_teacher" / "train" / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in train_names]
    assert all(m.shape == (H, W) and m.max() < len(CLASSES) for m in masks)  # threshold 0: every pixel a class

    # the student: real labels where they exist, the teacher's elsewhere at half weight for seg
    student = tmp_path / "student"
    assert main(train_args(student, root, "data.sources={seg: [masks, masks_teacher], depth: [depth, depth_teacher]}",
                           "data.teacher_weight={seg: 0.5}")) == 0
    config = yaml.safe_load((student / "config.yaml").read_text().split("\n", 1)[1])
    assert config["data"]["sources"] == {"seg": ["masks", "masks_teacher"], "depth": ["depth", "depth_teacher"]}
    assert config["data"]["teacher_weight"] == {"seg": 0.5}
    assert (student / "model.pth").is_file()

    out = tmp_path / "eval"
    assert main(["evaluate", str(student / "model.pth"), "--data", str(root), "--out", str(out), "--workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == len(val_names) and list(metrics["per_class_iou"]) == CLASSES
    assert metrics["miou"] is not None and metrics["abs_rel"] is not None
    assert metrics["evaluation"]["label_sources"] == {"seg": "masks", "depth": "depth"}
