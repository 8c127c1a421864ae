"""CityscapesDataset on the hand-made tree: exact train ids and depths, pairing by stem, bad inputs."""

import json
import shutil

import cv2
import numpy as np
import pytest

from mtdense.data.cityscapes import (
    CityscapesDataset, Frame, list_frames, list_splits, load_frame, read_camera, read_disparity_png,
    read_label_ids,
)
from mtdense.data.image import read_image
from mtdense.data.depth import clean_disparity, decode_cityscapes_disparity, disparity_to_depth


def test_samples_hold_the_exact_train_ids_and_depths(hand_tree):
    ds = CityscapesDataset(hand_tree.root, "train")
    assert [f.name for f in ds.frames] == sorted(hand_tree.frames)
    for sample in ds:
        spec = hand_tree.frames[sample["name"]]
        assert sample["image"].dtype == np.uint8 and sample["image"].shape == (4, 6, 3)
        assert sample["seg"].dtype == np.uint8
        np.testing.assert_array_equal(sample["seg"], np.array(spec["train"]))
        assert sample["depth"].dtype == np.float32
        np.testing.assert_allclose(sample["depth"], np.array(spec["depth"], np.float32), rtol=1e-6)
        # invalid pixels (p = 0 and p = 1) are exactly 0
        invalid = np.array(spec["disparity"]) <= 1
        assert (sample["depth"][invalid] == 0).all() and (sample["depth"][~invalid] > 0).all()
        assert sample["camera"] == pytest.approx(spec["camera"])
        assert set(sample["paths"]) == {"image", "label", "disparity", "camera"}
        assert sample["paths"]["label"].endswith(f"{sample['name']}_gtFine_labelIds.png")


def test_image_is_rgb(hand_tree):
    name = "aachen_000001_000019"
    sample = CityscapesDataset(hand_tree.root, "train")[1]
    assert sample["name"] == name
    bgr = cv2.imread(str(hand_tree.files[name]["image"]))
    np.testing.assert_array_equal(sample["image"], bgr[..., ::-1])


def test_frames_are_paired_by_stem_not_by_order(hand_tree):
    root = hand_tree.root
    # A stray label with no image sorts before every real one; deleting a middle frame's label
    # would shift all later labels onto the wrong images if files were paired by position.
    stray = root / "gtFine" / "train" / "aachen" / "aachen_000000_000000_gtFine_labelIds.png"
    shutil.copy(hand_tree.files["bochum_000000_000019"]["label"], stray)
    missing = hand_tree.files["aachen_000001_000019"]["label"]
    missing.unlink()
    with pytest.raises(FileNotFoundError) as err:
        list_frames(root, "train")
    assert str(missing) in str(err.value) and "1 of 3" in str(err.value) and "require_labels=False" in str(err.value)
    frames = list_frames(root, "train", require_labels=False)
    assert [f.label.name if f.label else None for f in frames] == [
        "aachen_000000_000019_gtFine_labelIds.png", None, "bochum_000000_000019_gtFine_labelIds.png"]
    ds = CityscapesDataset(root, "train", require_labels=False)
    assert "seg" not in ds[1]
    np.testing.assert_array_equal(ds[2]["seg"], np.array(hand_tree.frames["bochum_000000_000019"]["train"]))


def test_missing_disparity_camera_and_right_name_the_file_and_the_fix(hand_tree):
    root = hand_tree.root
    cam = hand_tree.files["bochum_000000_000019"]["camera"]
    cam.unlink()
    with pytest.raises(FileNotFoundError, match="camera_trainvaltest.zip") as err:
        list_frames(root, "train")
    assert str(cam) in str(err.value)
    # without depth no camera is needed, and samples carry no depth
    sample = CityscapesDataset(root, "train", depth_source=None)[2]
    assert "depth" not in sample and "camera" not in sample and "seg" in sample
    with pytest.raises(FileNotFoundError, match=r"mtdense data teacher .* --out disparity_sgbm"):
        list_frames(root, "train", depth_source="disparity_sgbm")
    (root / "rightImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="frankfurt_000000_000019_rightImg8bit.png"):
        list_frames(root, "val", load_right=True)


def test_missing_split_or_root(hand_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"splits under .*: train, val"):
        CityscapesDataset(hand_tree.root, "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_frames(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no leftImg8bit"):
        list_frames(tmp_path / "empty", "train")
    assert list_splits(hand_tree.root) == ["train", "val"]


def test_right_view_and_paths(hand_tree):
    ds = CityscapesDataset(hand_tree.root, "train", load_right=True)
    sample = ds[0]
    np.testing.assert_array_equal(sample["right"], sample["image"][:, ::-1])
    frame = ds.frames[0]
    assert isinstance(frame, Frame) and frame.right is not None
    assert set(frame.paths()) == {"image", "label", "disparity", "camera", "right"}
    assert sample["paths"] == {k: str(v) for k, v in frame.paths().items()}


def test_teacher_folder_and_label_source(hand_tree):
    root = hand_tree.root
    name = "aachen_000000_000019"
    spec = hand_tree.frames[name]
    # a teacher's folder: same naming and encoding; here every disparity is 4 px
    teacher = root / "disparity_teacher" / "train"
    for n, files in hand_tree.files.items():
        if files["image"].parent.parent.name == "train":
            d = teacher / files["image"].parent.name
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{n}_disparity.png"), np.full((4, 6), 1025, np.uint16))
    sample = CityscapesDataset(root, "train", depth_source="disparity_teacher")[0]
    b, fx = spec["camera"]["baseline"], spec["camera"]["fx"]
    np.testing.assert_allclose(sample["depth"], np.full((4, 6), b * fx / 4.0), rtol=1e-6)
    assert sample["paths"]["disparity"].startswith(str(root / "disparity_teacher"))
    # pseudo-labels in another folder, gtFine naming
    pseudo = root / "gtPseudo" / "train" / "aachen"
    pseudo.mkdir(parents=True)
    cv2.imwrite(str(pseudo / f"{name}_gtFine_labelIds.png"), np.full((4, 6), 26, np.uint8))
    ds = CityscapesDataset(root, "train", label_source="gtPseudo", require_labels=False)
    assert (ds[0]["seg"] == 13).all() and "seg" not in ds[2]


def test_crop_bottom_removes_the_bottom_rows_of_every_map(hand_tree):
    full = CityscapesDataset(hand_tree.root, "train", load_right=True)[0]
    cut = CityscapesDataset(hand_tree.root, "train", load_right=True, crop_bottom=0.25)[0]
    for key in ("image", "seg", "depth", "right"):
        assert cut[key].shape[0] == 3
        np.testing.assert_array_equal(cut[key], full[key][:3])
    with pytest.raises(ValueError, match="crop_bottom"):
        CityscapesDataset(hand_tree.root, "train", crop_bottom=1.0)


def test_clean_disparity_option_cleans_before_converting(hand_tree):
    name = "bochum_000000_000019"
    spec = hand_tree.frames[name]
    sample = CityscapesDataset(hand_tree.root, "train", clean_disparity=True)[2]
    cam = spec["camera"]
    expected = disparity_to_depth(clean_disparity(decode_cityscapes_disparity(np.array(spec["disparity"], np.uint16))),
                                  cam["baseline"], cam["fx"])
    np.testing.assert_allclose(sample["depth"], expected, rtol=1e-6)
    assert (sample["depth"] > 0).sum() > (np.array(spec["depth"]) > 0).sum()  # holes filled
    with pytest.raises(ValueError, match="depth_source"):
        CityscapesDataset(hand_tree.root, "train", depth_source=None, clean_disparity=True)


def test_cache_in_memory_gives_the_same_samples_and_decodes_each_frame_once(hand_tree, monkeypatch):
    import mtdense.data.cityscapes as cs

    plain = CityscapesDataset(hand_tree.root, "train")
    cached = CityscapesDataset(hand_tree.root, "train", cache_in_memory=True)
    for _ in range(2):
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert a.keys() == b.keys()
            for key in ("image", "seg", "depth"):
                np.testing.assert_array_equal(a[key], b[key])
            assert a["camera"] == b["camera"] and a["paths"] == b["paths"]
    # after the first pass the cache serves every frame without touching the files
    real_load = cs.load_frame
    reads = []
    monkeypatch.setattr(cs, "load_frame", lambda frame, **kw: reads.append(frame.name) or real_load(frame, **kw))
    [cached[i] for i in range(len(cached))]
    assert reads == []
    [plain[i] for i in range(len(plain))]
    assert len(reads) == len(plain)
    # a caller (or a transform) that writes into a sample does not change what the cache returns
    sample = cached[0]
    sample["image"][:] = 0
    sample["camera"]["fx"] = -1.0
    np.testing.assert_array_equal(cached[0]["image"], plain[0]["image"])
    assert cached[0]["camera"] == plain[0]["camera"]
    assert cached[-1]["name"] == plain.frames[-1].name
    with pytest.raises(IndexError):
        cached[len(plain)]


# --- bad inputs -------------------------------------------------------------------------------

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("role", ["image", "label", "disparity", "right"])
def test_corrupt_png_names_the_file(hand_tree, role):
    path = hand_tree.files["aachen_000001_000019"][role]
    _truncate(path)
    ds = CityscapesDataset(hand_tree.root, "train", load_right=True)
    ds[0]  # the other frames still load
    with pytest.raises(ValueError, match="cannot decode") as err:
        ds[1]
    assert str(path) in str(err.value)


@pytest.mark.parametrize("role, array, shown", [
    ("label", np.full((5, 6), 7, np.uint8), "5x6"),
    ("disparity", np.full((4, 7), 257, np.uint16), "4x7"),
])
def test_map_of_the_wrong_size_names_both_files(hand_tree, role, array, shown):
    files = hand_tree.files["aachen_000000_000019"]
    cv2.imwrite(str(files[role]), array)
    with pytest.raises(ValueError, match=shown) as err:
        CityscapesDataset(hand_tree.root, "train")[0]
    assert str(files[role]) in str(err.value) and str(files["image"]) in str(err.value)


def test_camera_without_baseline_names_the_file(hand_tree):
    path = hand_tree.files["aachen_000000_000019"]["camera"]
    data = json.loads(path.read_text())
    del data["extrinsic"]["baseline"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"extrinsic\.baseline") as err:
        CityscapesDataset(hand_tree.root, "train")[0]
    assert str(path) in str(err.value)
    # without depth the camera is not read
    assert "seg" in CityscapesDataset(hand_tree.root, "train", depth_source=None)[0]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable JSON"),
    (json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": "big", "fy": 1, "u0": 1, "v0": 1}}), "not a finite number"),
    (json.dumps({"extrinsic": {"baseline": -0.2}, "intrinsic": {"fx": 10, "fy": 10, "u0": 1, "v0": 1}}), "must be > 0"),
])
def test_bad_camera_files(tmp_path, content, message):
    path = tmp_path / "x_camera.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_camera(path)
    assert str(path) in str(err.value)


def test_unknown_label_id_names_the_file_and_the_id(hand_tree):
    path = hand_tree.files["bochum_000000_000019"]["label"]
    ids = np.array(hand_tree.frames["bochum_000000_000019"]["ids"], np.uint8)
    ids[0, 0] = 34
    cv2.imwrite(str(path), ids)
    with pytest.raises(ValueError, match=r"\[34\]") as err:
        CityscapesDataset(hand_tree.root, "train")[2]
    assert str(path) in str(err.value)


def test_wrong_formats(tmp_path):
    color_label = tmp_path / "a_gtFine_labelIds.png"
    cv2.imwrite(str(color_label), np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="not \\*_color.png"):
        read_label_ids(color_label)
    disp8 = tmp_path / "a_disparity.png"
    cv2.imwrite(str(disp8), np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match="16-bit") as err:
        read_disparity_png(disp8)
    assert str(disp8) in str(err.value)
    gray = tmp_path / "a_leftImg8bit.png"
    cv2.imwrite(str(gray), np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match="colour image"):
        read_image(gray, colour_only=True)
    rgba = tmp_path / "b_leftImg8bit.png"
    cv2.imwrite(str(rgba), np.dstack([np.zeros((4, 6, 2), np.uint8), np.full((4, 6, 2), 200, np.uint8)]))
    assert read_image(rgba, colour_only=True).shape == (4, 6, 3) and (read_image(rgba, colour_only=True)[..., 0] == 200).all()  # BGRA -> RGB
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_image(tmp_path / "nope.png", colour_only=True)


def test_load_frame_without_camera_for_disparity_is_refused(hand_tree):
    f = list_frames(hand_tree.root, "train")[0]
    bad = Frame(f.name, f.split, f.city, f.image, f.label, f.disparity, None)
    with pytest.raises(ValueError, match="camera"):
        load_frame(bad)


def test_class_pixel_counts_count_the_hand_labels(hand_tree):
    from mtdense.data.cityscapes import class_pixel_counts
    from mtdense.data.labels import NUM_CLASSES

    expected = np.zeros(NUM_CLASSES, np.int64)
    for spec in hand_tree.frames.values():
        train = np.array(spec["train"])
        for k in range(NUM_CLASSES):
            expected[k] += int((train == k).sum())
    np.testing.assert_array_equal(class_pixel_counts(hand_tree.root, "train"), expected)
    # crop_bottom=0.25 drops the last of the 4 rows of every frame
    cropped = np.zeros(NUM_CLASSES, np.int64)
    for spec in hand_tree.frames.values():
        train = np.array(spec["train"])[:3]
        for k in range(NUM_CLASSES):
            cropped[k] += int((train == k).sum())
    np.testing.assert_array_equal(class_pixel_counts(hand_tree.root, "train", crop_bottom=0.25), cropped)


def test_normals_exact_values_crop_and_missing_or_bad_files(hand_tree):
    """normals/ beside the other folders: read back exactly (rgb / 127.5 - 1, renormalised),
    cut by crop_bottom like every map; a missing or malformed file names itself and the fix."""
    from mtdense.data.normals import encode_normals

    root = hand_tree.root
    rng = np.random.default_rng(1)
    written = {}
    for name, files in hand_tree.files.items():
        split, city = files["image"].parent.parent.name, files["image"].parent.name
        n = rng.normal(size=(4, 6, 3))
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        rgb = encode_normals(n)
        rgb[0, 0] = 0  # one pixel without a normal
        d = root / "normals" / split / city
        d.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(d / f"{name}_normals.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written[name] = rgb
    ds = CityscapesDataset(root, "train", load_normals=True)
    sample = ds[0]
    rgb = written[ds.frames[0].name]
    expected = rgb.astype(np.float64) / 127.5 - 1
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True).clip(1e-12)
    expected[0, 0] = 0
    np.testing.assert_allclose(sample["normals"], expected, rtol=0, atol=1e-6)
    assert sample["paths"]["normals"].endswith("_normals.png")
    cut = CityscapesDataset(root, "train", load_normals=True, crop_bottom=0.25)[0]
    np.testing.assert_array_equal(cut["normals"], sample["normals"][:3])
    # the Cityscapes-layout dataset of open_dataset says it has normals when it loads them
    from mtdense.data.open import open_dataset

    assert open_dataset(root, "train", format="cityscapes", load_normals=True).info.tasks == ("seg", "depth", "normals")
    # a grey pixel meant as "none" encodes no unit vector
    bad = written[ds.frames[1].name].copy()
    bad[1, 1] = 128
    path = root / "normals" / "train" / ds.frames[1].city / f"{ds.frames[1].name}_normals.png"
    cv2.imwrite(str(path), cv2.cvtColor(bad, cv2.COLOR_RGB2BGR))
    with pytest.raises(ValueError, match=r"_normals.png: 1 pixels encode no unit vector \(e.g. rgb \(128, 128, 128\)"):
        ds[1]
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"no surface normals \(normals/\).*mtdense data synth .* --overwrite"):
        CityscapesDataset(root, "train", load_normals=True)
