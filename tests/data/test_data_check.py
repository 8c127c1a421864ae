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


# --- the folder format -----------------------------------------------------------------------------

FH, FW = 24, 32


def _folder_tree(root):
    """train: a (mask, depth, normals), b (mask), c (no labels); val: v (mask). 3 classes."""
    rng = np.random.default_rng(0)
    root.mkdir()
    (root / "dataset.yaml").write_text("classes: [floor, wall, person]\n")
    files = {}

    def put(folder, split, name, array):
        path = root / folder / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), array)
        files[folder, name] = path

    for split, name in (("train", "a"), ("train", "b"), ("train", "c"), ("val", "v")):
        put("images", split, f"{name}.png", rng.integers(0, 256, (FH, FW, 3), dtype=np.uint8))
        if name != "c":
            put("masks", split, f"{name}.png", rng.integers(0, 3, (FH, FW)).astype(np.uint8))
    put("depth", "train", "a.png", np.full((FH, FW), 512, np.uint16))  # 2 m
    normals = np.zeros((FH, FW, 3), np.uint8)
    normals[...] = (255, 128, 128)  # BGR of rgb (128, 128, 255): n = (0, 0, 1)
    put("normals", "train", "a.png", normals)
    return root, files


def test_a_good_folder_tree_passes(tmp_path, capsys):
    root, _ = _folder_tree(tmp_path / "mine")
    report = check_dataset(root, progress=False)
    assert report.format == "folder" and report.info.classes == ("floor", "wall", "person")
    train, val = report.splits["train"], report.splits["val"]
    assert (train.images, train.masks, train.depths, train.normals, train.checked) == (3, 2, 1, 1, 3)
    assert train.depth_range == (2.0, 2.0) and train.valid_share_sum == 1.0
    # val has masks but no depth / normals although the dataset has them: warnings, not errors
    assert report.ok and {p.file for p in report.warnings} == {str(root / "depth" / "val"), str(root / "normals" / "val")}
    assert (val.images, val.masks) == (1, 1)
    assert main(["data", "check", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"Folder dataset {root} (3 classes, labels for seg, depth, normals)" in out and "OK: no errors, 2 warnings" in out


def test_every_folder_problem_is_listed_with_its_file(tmp_path, capsys):
    root, files = _folder_tree(tmp_path / "mine")
    corrupt = files["images", "b.png"]
    corrupt.write_bytes(corrupt.read_bytes()[:50])
    bad_values = files["masks", "a.png"]
    mask = np.zeros((FH, FW), np.uint8)
    mask[0, :2] = (3, 200)
    cv2.imwrite(str(bad_values), mask)
    small = files["masks", "v.png"]
    cv2.imwrite(str(small), np.zeros((FH - 4, FW), np.uint8))
    eight_bit = files["depth", "a.png"]
    cv2.imwrite(str(eight_bit), np.full((FH, FW), 2, np.uint8))
    grey = files["normals", "a.png"]
    cv2.imwrite(str(grey), np.full((FH, FW, 3), 128, np.uint8))
    orphan = root / "masks" / "train" / "zz.png"
    cv2.imwrite(str(orphan), np.zeros((FH, FW), np.uint8))
    jpeg = root / "depth" / "train" / "c.jpg"
    cv2.imwrite(str(jpeg), np.zeros((FH, FW), np.uint8))
    cv2.imwrite(str(root / "images" / "train" / "c.jpg"), np.zeros((FH, FW, 3), np.uint8))
    twin = files["images", "c.png"]  # the second in name order
    lost_split = root / "masks" / "test"
    lost_split.mkdir()
    cv2.imwrite(str(lost_split / "t.png"), np.zeros((FH, FW), np.uint8))
    (root / "images" / "train" / "notes.txt").write_text("not an image")

    report = check_dataset(root, progress=False)
    by_file = {p.file: p for p in report.errors}
    assert set(by_file) == {str(p) for p in (corrupt, bad_values, small, eight_bit, grey, orphan, jpeg, twin, lost_split)}
    assert "cannot decode" in by_file[str(corrupt)].message
    assert "mask values 3, 200 on 2 pixels are not class indices 0..2" in by_file[str(bad_values)].message
    assert "20x32" in by_file[str(small)].message and str(files["images", "v.png"]) in by_file[str(small)].message
    assert "not a 16-bit single-channel depth PNG" in by_file[str(eight_bit)].message
    assert "768 pixels encode no unit vector" in by_file[str(grey)].message
    assert "no image zz.*" in by_file[str(orphan)].message
    assert "must be PNG" in by_file[str(jpeg)].message
    assert "a second image named 'c' (beside c.jpg)" in by_file[str(twin)].message
    assert "labels of split 'test' but no images/test/" in by_file[str(lost_split)].message
    assert str(root / "images" / "train" / "notes.txt") in {p.file for p in report.warnings}
    assert main(["data", "check", str(root), "--quiet", "--max-problems", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 9 errors" in out and "... and 6 more errors" in out


def test_a_broken_dataset_yaml_is_listed_and_the_rest_still_checked(tmp_path):
    root, files = _folder_tree(tmp_path / "mine")
    (root / "dataset.yaml").write_text("classes: [floor, floor]\n")
    cv2.imwrite(str(files["masks", "b.png"]), np.zeros((FH - 1, FW), np.uint8))
    report = check_dataset(root, progress=False, limit=1)
    assert report.info is None
    assert {p.file for p in report.errors} >= {str(root / "dataset.yaml")}
    yaml_error = next(p for p in report.errors if p.file == str(root / "dataset.yaml"))
    assert "'classes' name 'floor' appears twice" in yaml_error.message and "unique" in yaml_error.fix
    assert report.splits["train"].checked == 1 and report.splits["train"].images == 3
    assert "dataset.yaml unreadable" in report.summary()
    (root / "dataset.yaml").unlink()  # images/ without leftImg8bit/: still the folder format
    report = check_dataset(root, progress=False)
    assert report.format == "folder" and "no dataset description" in report.errors[0].message
