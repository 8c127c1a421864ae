"""The pre-resized cache: same layout, depth unchanged, resumable."""

import json
import shutil

import cv2
import numpy as np
import pytest

from mtdense.cli import main
from mtdense.data.cache import CACHE_META_FILE, cache_dataset
from mtdense.data.cityscapes import CityscapesDataset, read_camera


def test_half_scale_cache_keeps_depth_and_labels(block_tree, tmp_path):
    out = tmp_path / "half"
    summary = cache_dataset(block_tree, out, scale=0.5, progress=False)
    assert summary.frames == {"train": 2, "val": 1}
    assert summary.sizes == {(32, 64): (16, 32)}
    assert summary.depth_folders == ["disparity"] and summary.label_folders == ["gtFine"]
    assert summary.written == 3 * 5 and summary.skipped == 0  # image, label, disparity, camera, right
    for split in ("train", "val"):
        src = CityscapesDataset(block_tree, split, load_right=True)
        dst = CityscapesDataset(out, split, load_right=True)
        assert [f.name for f in dst.frames] == [f.name for f in src.frames]
        for a, b in zip(src, dst):
            assert b["image"].shape == (16, 32, 3) and b["right"].shape == (16, 32, 3)
            # nearest-exact: cached pixel (i, j) is source pixel (2 i + 1, 2 j + 1)
            np.testing.assert_array_equal(b["seg"], a["seg"][1::2, 1::2])
            # disparities are multiples of 1/128 px, so halving them is exact in the encoding
            np.testing.assert_allclose(b["depth"], a["depth"][1::2, 1::2], rtol=1e-6)
            assert (b["depth"] == 0).sum() == (a["depth"][1::2, 1::2] == 0).sum()
            # area interpolation: each cached pixel is the mean of a 2 x 2 block
            mean = a["image"].astype(np.float32).reshape(16, 2, 32, 2, 3).mean(axis=(1, 3))
            assert np.abs(b["image"].astype(np.float32) - mean).max() <= 0.5 + 1e-6
            ca, cb = a["camera"], b["camera"]
            assert cb["baseline"] == ca["baseline"]
            assert cb["fx"] == pytest.approx(ca["fx"] / 2) and cb["fy"] == pytest.approx(ca["fy"] / 2)
            assert cb["u0"] == pytest.approx((ca["u0"] + 0.5) / 2 - 0.5) and cb["v0"] == pytest.approx((ca["v0"] + 0.5) / 2 - 0.5)
    meta = json.loads((out / CACHE_META_FILE).read_text())
    assert meta["scale"] == 0.5 and meta["size"] is None
    # everything else in the camera file is kept
    cam = json.loads(next((out / "camera").rglob("*.json")).read_text())
    assert cam["extrinsic"]["pitch"] == 0.038


def test_depth_survives_any_size_within_the_quantisation(block_tree, tmp_path):
    # random disparities (not on the 1/256 grid after scaling) and an anisotropic size
    root = block_tree
    rng = np.random.default_rng(1)
    for path in (root / "disparity").rglob("*.png"):
        disp = rng.uniform(0.3, 60.0, (32, 64))
        png = np.rint(disp * 256 + 1).astype(np.uint16)
        png[rng.random((32, 64)) < 0.2] = 0
        cv2.imwrite(str(path), png)
    out = tmp_path / "odd"
    summary = cache_dataset(root, out, size=(24, 40), progress=False, workers=2)
    assert summary.sizes == {(32, 64): (24, 40)}
    sy, sx = 24 / 32, 40 / 64
    # which source pixel each cached pixel samples (OpenCV's nearest-exact, ties rounded its way)
    index = np.arange(32 * 64, dtype=np.float32).reshape(32, 64)
    picked = cv2.resize(index, (40, 24), interpolation=cv2.INTER_NEAREST_EXACT).astype(int)
    rows, cols = picked // 64, picked % 64
    assert np.abs(rows - (np.arange(24)[:, None] + 0.5) / sy).max() <= 1 and np.abs(cols - (np.arange(40) + 0.5) / sx).max() <= 1
    for a, b in zip(CityscapesDataset(root, "train"), CityscapesDataset(out, "train")):
        ref = a["depth"][rows, cols]
        assert ((b["depth"] > 0) == (ref > 0)).all()
        valid = ref > 0
        bf = a["camera"]["baseline"] * a["camera"]["fx"]
        cached_disp = bf * sx / ref[valid]
        # |error| in the cached disparity <= 1/512 px -> relative depth error <= (1/512) / d
        rel = np.abs(b["depth"][valid] - ref[valid]) / ref[valid]
        assert (rel <= (1 / 512) / (cached_disp - 1 / 512) + 1e-6).all()
        assert b["camera"]["fx"] == pytest.approx(a["camera"]["fx"] * sx)
        assert b["camera"]["fy"] == pytest.approx(a["camera"]["fy"] * sy)


def test_resumes_and_refuses_other_settings(block_tree, tmp_path):
    out = tmp_path / "half"
    first = cache_dataset(block_tree, out, scale=0.5, right=False, progress=False)
    assert first.written == 12 and first.skipped == 0
    again = cache_dataset(block_tree, out, scale=0.5, right=False, progress=False)
    assert again.written == 0 and again.skipped == 12
    assert again.sizes == {(32, 64): (16, 32)}  # known without decoding
    lost = next((out / "gtFine").rglob("*.png"))
    lost.unlink()
    resumed = cache_dataset(block_tree, out, scale=0.5, right=False, progress=False)
    assert resumed.written == 1 and resumed.skipped == 11 and lost.is_file()
    assert not list(out.rglob("*.part*"))
    with pytest.raises(ValueError, match="scale=0.5"):
        cache_dataset(block_tree, out, scale=0.25, progress=False)
    redo = cache_dataset(block_tree, out, scale=0.25, right=False, overwrite=True, progress=False)
    assert redo.written == 12 and CityscapesDataset(out, "val")[0]["image"].shape == (8, 16, 3)


def test_depth_folders_and_settings(block_tree, tmp_path):
    shutil.copytree(block_tree / "disparity", block_tree / "disparity_sgbm")
    out = tmp_path / "c"
    summary = cache_dataset(block_tree, out, scale=0.5, splits=["val"], progress=False)
    assert summary.depth_folders == ["disparity", "disparity_sgbm"] and summary.frames == {"val": 1}
    assert (out / "disparity_sgbm" / "val").is_dir() and not (out / "leftImg8bit" / "train").exists()
    none = cache_dataset(block_tree, tmp_path / "d", scale=0.5, depth_folders=[], progress=False)
    assert none.depth_folders == [] and not (tmp_path / "d" / "disparity").exists()
    assert "depth" not in CityscapesDataset(tmp_path / "d", "train", depth_source=None)[0]
    with pytest.raises(FileNotFoundError, match="disparity_sgbm"):
        cache_dataset(block_tree, tmp_path / "e", scale=0.5, depth_folders=["nope"], progress=False)
    with pytest.raises(ValueError, match="exactly one"):
        cache_dataset(block_tree, tmp_path / "e", scale=0.5, size=(8, 8))
    with pytest.raises(ValueError, match="must differ"):
        cache_dataset(block_tree, block_tree, scale=0.5)


def test_a_bad_source_file_fails_its_frame_naming_it_and_the_rest_go_on(block_tree, tmp_path):
    label = next((block_tree / "gtFine" / "train").rglob("*.png"))
    cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
    seen = []
    summary = cache_dataset(block_tree, tmp_path / "c", scale=0.5, progress=False, on_failure=seen.append)
    assert list(summary.failed.values()) == seen and len(seen) == 1 and str(label) in seen[0]
    frame = label.name.removesuffix("_gtFine_labelIds.png")
    assert not list((tmp_path / "c").rglob(f"{frame}_*"))  # none of the failed frame's files
    assert len(list((tmp_path / "c" / "leftImg8bit").rglob("*.png"))) == 2  # the other two frames


def test_cli(block_tree, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "cache", str(block_tree), str(out), "--size", "16", "32", "--no-right"]) == 0
    text = capsys.readouterr().out
    assert "cached train 2, val 1 frames" in text and "64x32 -> 32x16" in text
    assert not (out / "rightImg8bit").exists()
    cam = read_camera(next((out / "camera").rglob("*.json")))
    assert cam["fx"] == pytest.approx(25.0)
    assert main(["data", "cache", str(block_tree), str(block_tree), "--scale", "0.5"]) == 2
