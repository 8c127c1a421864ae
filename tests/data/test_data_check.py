"""`mtdense data check`: counts, problems that name the file and the fix, exit codes."""

import json

import cv2
import numpy as np
import pytest

from mtdense.cli import main
from mtdense.data.check import check_dataset


def test_a_good_tree_passes_with_counts_and_ranges(hand_tree, capsys):
    report = check_dataset(hand_tree.root, progress=False)
    assert report.ok and report.problems == []
    train = report.splits["train"]
    assert (train.images, train.labels, train.disparities, train.cameras, train.rights, train.checked) == (3, 3, 3, 3, 3, 3)
    assert report.splits["val"].rights == 0
    # hand-made disparities span 1/32 .. 2 px; depths 1 .. 96 m
    assert train.disparity_range == pytest.approx((1 / 32, 2.0))
    assert train.depth_range == pytest.approx((1.0, 96.0))
    valid = [(np.array(s["disparity"]) > 1).mean() for s in hand_tree.frames.values()]
    assert train.valid_share_sum / train.depth_checked == pytest.approx(np.mean(valid))
    assert main(["data", "check", str(hand_tree.root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK: no errors" in out and "0.03..2.00" in out and "1.0..96.0" in out


def test_errors_name_the_file_and_fail(hand_tree, capsys):
    files = hand_tree.files
    corrupt = files["aachen_000000_000019"]["disparity"]
    corrupt.write_bytes(corrupt.read_bytes()[:30])
    unknown = files["aachen_000001_000019"]["label"]
    cv2.imwrite(str(unknown), np.full((4, 6), 50, np.uint8))
    small = files["bochum_000000_000019"]["label"]
    cv2.imwrite(str(small), np.full((3, 6), 7, np.uint8))
    missing = files["frankfurt_000000_000019"]["camera"]
    missing.unlink()
    report = check_dataset(hand_tree.root, progress=False)
    assert not report.ok
    by_file = {p.file: p for p in report.errors}
    assert set(by_file) == {str(corrupt), str(unknown), str(small), str(missing)}
    assert "cannot decode" in by_file[str(corrupt)].message
    assert "[50]" in by_file[str(unknown)].message
    assert "3x6" in by_file[str(small)].message and str(files["bochum_000000_000019"]["image"]) in by_file[str(small)].message
    assert "camera_trainvaltest.zip" in by_file[str(missing)].fix
    assert main(["data", "check", str(hand_tree.root), "--quiet", "--max-problems", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 4 errors" in out and "... and 2 more errors" in out


def test_partial_labels_are_errors_none_at_all_a_warning(hand_tree):
    hand_tree.files["aachen_000000_000019"]["label"].unlink()
    report = check_dataset(hand_tree.root, splits=["train"], progress=False)
    assert [p.file for p in report.errors] == [str(hand_tree.files["aachen_000000_000019"]["label"])]
    for f in hand_tree.files.values():
        f["label"].unlink(missing_ok=True)
    report = check_dataset(hand_tree.root, progress=False)
    assert report.ok and len(report.warnings) == 2  # one per split
    assert all("has a label" in p.message for p in report.warnings)


def test_warnings_alone_pass(hand_tree, capsys):
    cam = hand_tree.files["bochum_000000_000019"]["camera"]
    data = json.loads(cam.read_text())
    data["extrinsic"]["baseline"] = 20.0  # centimetres written as metres
    data["intrinsic"]["u0"] = 600.0  # not scaled with the image
    cam.write_text(json.dumps(data))
    stray = hand_tree.root / "gtFine" / "train" / "bochum" / "bochum_000099_000019_gtFine_labelIds.png"
    cv2.imwrite(str(stray), np.zeros((4, 6), np.uint8))
    hand_tree.files["aachen_000001_000019"]["right"].unlink()
    report = check_dataset(hand_tree.root, progress=False)
    assert report.ok
    messages = {p.file: p.message for p in report.warnings}
    assert "baseline 20 m" in messages[str(cam)] or "principal point" in messages[str(cam)]
    assert sum(p.file == str(cam) for p in report.warnings) == 2
    assert "no image" in messages[str(stray)]
    assert "right view missing" in messages[str(hand_tree.files["aachen_000001_000019"]["right"])]
    assert main(["data", "check", str(hand_tree.root), "--quiet"]) == 0
    assert "OK: no errors, 4 warnings" in capsys.readouterr().out


def test_camera_without_baseline_and_limit(hand_tree):
    cam = hand_tree.files["aachen_000001_000019"]["camera"]
    data = json.loads(cam.read_text())
    del data["extrinsic"]["baseline"]
    cam.write_text(json.dumps(data))
    report = check_dataset(hand_tree.root, splits=["train"], progress=False)
    assert [p.file for p in report.errors] == [str(cam)] and "baseline" in report.errors[0].message
    # depth not checked: the camera is not read
    assert check_dataset(hand_tree.root, splits=["train"], depth_source=None, progress=False).ok
    limited = check_dataset(hand_tree.root, splits=["train"], limit=2, progress=False)
    assert limited.splits["train"].checked == 2 and limited.splits["train"].images == 3


def test_missing_root_or_split_exit_2(tmp_path, hand_tree, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "check", str(hand_tree.root), "--splits", "test"]) == 2
    assert "splits under" in capsys.readouterr().err
