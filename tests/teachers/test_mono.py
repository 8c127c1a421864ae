"""``mtdense data teacher --method mono-onnx``: tiny ONNX depth teachers whose output is a known
function of the true depth of generated frames, aligned to anchors with outliers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from folder_scenes import (
    MetricDepth, RelativeDepth, TwoInputs, depth_png, export, make_dataset, median_relative_error, read_depth, write_png,
)
from mtdense.cli import main
from mtdense.data.check import check_folder_dataset
from mtdense.data.folder import FolderDataset


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    d = tmp_path_factory.mktemp("teachers")
    return {
        "relative": export(RelativeDepth(), d / "relative.onnx"),
        "metric": export(MetricDepth(), d / "metric.onnx"),
        "two": export(TwoInputs(), d / "two.onnx", inputs=2),
    }


def mono(root: Path, model: Path, *extra: str) -> int:
    return main(["data", "teacher", str(root), "--method", "mono-onnx", "--model", str(model), "--quiet", *extra])


def summary(root: Path, out: str = "depth_mono", split: str = "train") -> dict:
    return json.loads((root / out / f"{split}_summary.json").read_text())


def test_a_relative_teacher_aligned_per_frame_gives_the_true_metres(tmp_path, teachers):
    root = tmp_path / "ds"
    truth = make_dataset(root, greys=[10, 90, 160, 240])  # a different scale and shift in every frame
    assert mono(root, teachers["relative"], "--batch", "3") == 0
    for name, depth in truth.items():
        written = read_depth(root / "depth_mono" / "train" / f"{name}.png")
        assert written.shape == depth.shape
        assert median_relative_error(written, depth) < 0.01
    s = summary(root)
    assert (s["written"], s["kept"], s["skipped"]) == (4, 0, {})
    assert s["task"] == "depth" and s["teacher"]["align"] == "per-frame" and s["complete"]
    scales = [s["frame_info"][n]["scale"] for n in truth]
    assert len(set(np.round(scales, 6))) == 4  # one fit per frame
    assert all(s["frame_info"][n]["residual"] < 0.01 and s["frame_info"][n]["anchors"] > 20 for n in truth)
    # A label source as the format reads it; the dataset and its check ignore the extra folder.
    report = check_folder_dataset(root, progress=False)
    assert report.ok and not report.warnings, report.summary()
    assert len(FolderDataset(root, "train")) == 4


def test_a_global_fit_reaches_frames_without_anchors(tmp_path, teachers):
    root = tmp_path / "ds"
    truth = make_dataset(root, greys=[120] * 4, anchored=[True, False, True, False])
    assert mono(root, teachers["relative"], "--align", "global") == 0
    for name, depth in truth.items():
        assert median_relative_error(read_depth(root / "depth_mono" / "train" / f"{name}.png"), depth) < 0.01
    s = summary(root)
    assert s["state"]["global_fit"]["frames"] == 2 and s["written"] == 4
    assert "residual" in s["frame_info"]["f0"] and "residual" not in s["frame_info"]["f1"]


def test_per_frame_alignment_skips_and_names_a_frame_without_anchors(tmp_path, teachers, capsys):
    root = tmp_path / "ds"
    make_dataset(root, greys=[30, 60, 90], anchored=[True, False, True])
    assert mono(root, teachers["relative"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {root / 'images/train/f1.png'}: no anchor depth {root / 'depth/train/f1.png'}" in err
    assert not (root / "depth_mono" / "train" / "f1.png").exists()
    assert sorted(summary(root)["skipped"]["no_anchors"]) == ["f1"]
    # Too few anchor points is no way to metres either.
    few = np.zeros((24, 40), np.uint16)
    few[0, :5] = 1000
    write_png(root / "depth" / "train" / "f1.png", few)
    assert mono(root, teachers["relative"], "--min-anchors", "10") == 2  # other settings than the run before
    assert "written by a teacher with other settings" in capsys.readouterr().err
    assert mono(root, teachers["relative"], "--min-anchors", "10", "--overwrite") == 1
    assert "5 anchor points in" in capsys.readouterr().err


def test_frames_above_the_residual_limit_are_dropped_and_listed(tmp_path, teachers):
    root = tmp_path / "ds"
    truth = make_dataset(root, greys=[40, 80, 120])
    rng = np.random.default_rng(5)
    garbage = np.where(rng.random((24, 40)) < 0.3, rng.uniform(1, 90, (24, 40)), 0)
    write_png(root / "depth" / "train" / "f2.png", depth_png(garbage))  # anchors unrelated to the scene
    assert mono(root, teachers["relative"], "--max-residual", "0.1") == 1
    s = summary(root)
    assert list(s["skipped"]["residual"]) == ["f2"]
    assert s["frame_info"]["f2"]["residual"] > 0.1 and s["frame_info"]["f2"]["skipped"] == "residual"
    assert not (root / "depth_mono" / "train" / "f2.png").exists()
    assert median_relative_error(read_depth(root / "depth_mono/train/f0.png"), truth["f0"]) < 0.01


def test_a_metric_teacher_writes_its_metres_without_anchors(tmp_path, teachers):
    root = tmp_path / "ds"
    truth = make_dataset(root, greys=[50, 100], anchored=[False, False])
    assert mono(root, teachers["relative"]) == 2  # a relative teacher with no anchors at all is refused
    assert mono(root, teachers["metric"], "--metric", "--output", "depth", "--out", "depth_metric") == 0
    for name, depth in truth.items():
        written = read_depth(root / "depth_metric" / "train" / f"{name}.png")
        np.testing.assert_allclose(written, depth, atol=0.5 / 256 + 1e-5)
    assert summary(root, "depth_metric")["teacher"]["metric"] is True


def test_a_fixed_size_teacher_runs_at_its_size_and_its_map_comes_back_at_the_frames(tmp_path):
    import contextlib
    import io
    import warnings

    import torch

    path = tmp_path / "fixed.onnx"
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MetricDepth().eval(), (torch.rand(1, 3, 12, 20),), str(path), dynamo=False,
                          input_names=["image"], output_names=["out"])
    root = tmp_path / "ds"
    truth = make_dataset(root, greys=[50, 100], anchored=[False, False])
    assert mono(root, path, "--metric", "--output", "depth", "--input-size", "24", "40") == 2
    assert main(["data", "teacher", str(root), "--method", "mono-onnx", "--model", str(path), "--metric", "--output",
                 "depth", "--quiet"]) == 0
    for name, depth in truth.items():
        written = read_depth(root / "depth_mono" / "train" / f"{name}.png")
        assert written.shape == depth.shape and (written > 0).all()
        # Halved and doubled again: exact on the smooth ground, blurred at the box's edges.
        assert median_relative_error(written, depth) < 0.05


def test_resume_keeps_what_was_written(tmp_path, teachers):
    root = tmp_path / "ds"
    make_dataset(root, greys=[10, 200])
    assert mono(root, teachers["relative"]) == 0
    first = root / "depth_mono" / "train" / "f0.png"
    stamp = first.stat().st_mtime_ns
    (root / "depth_mono" / "train" / "f1.png").unlink()
    assert mono(root, teachers["relative"]) == 0
    s = summary(root)
    assert (s["written"], s["kept"]) == (1, 1) and first.stat().st_mtime_ns == stamp
    assert s["frame_info"]["f0"]["residual"] < 0.01  # carried over from the run that wrote it


def test_bad_inputs_are_refused_naming_the_file(tmp_path, teachers, capsys):
    root = tmp_path / "ds"
    make_dataset(root, greys=[10, 20])
    assert mono(root, teachers["two"]) == 2
    assert f"{teachers['two']}: has 2 inputs" in capsys.readouterr().err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(teachers["relative"].read_bytes()[:100])
    assert mono(root, broken) == 2
    assert f"{broken}: ONNX Runtime cannot load it" in capsys.readouterr().err
    assert mono(root, teachers["metric"], "--metric", "--output", "disparity") == 2
    assert "--metric with --output disparity" in capsys.readouterr().err
    assert mono(root, teachers["relative"], "--class-map", "x.yaml") == 2
    assert "--class-map is an option of --method seg-onnx / model, not mono-onnx" in capsys.readouterr().err
    assert mono(root, teachers["relative"], "--anchors", "depth_x", "--out", "depth_x") == 2
    assert "--anchors depth_x is the output folder" in capsys.readouterr().err
    assert mono(root, teachers["relative"], "--out", "masks") == 2
    assert "is a folder of the real data" in capsys.readouterr().err
    assert mono(root, teachers["relative"], "--anchors", "lidar") == 2
    assert f"{root / 'lidar' / 'train'}: no anchor depth for any frame" in capsys.readouterr().err
    # An anchor file that does not decode is that frame's fault: skipped by name, the rest done.
    (root / "depth" / "train" / "f1.png").write_bytes(b"\x89PNG broken")
    assert mono(root, teachers["relative"]) == 1
    assert f"skipped {root / 'depth/train/f1.png'}: cannot decode" in capsys.readouterr().err
    assert (root / "depth_mono" / "train" / "f0.png").is_file() and not (root / "depth_mono" / "train" / "f1.png").exists()
    assert list(summary(root)["skipped"]["unreadable"]) == ["f1"]
