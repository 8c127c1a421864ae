"""Rendering: exact stereo geometry of the generated views (pinhole projection, disparity, the
right view as the left texture shifted by the disparity, SGBM recovers it)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from synth_city import SEED, SIZE, read

from mtdense.data import synthetic as syn
from mtdense.data.depth import decode_cityscapes_disparity, disparity_to_depth


def test_disparity_is_consistent_with_camera_and_rendered_depth(city):
    h, w = SIZE
    for split, n in city.frames.items():
        for i in range(n):
            c, stem = syn.frame_name(split, i)
            cam = json.loads((city.root / "camera" / split / c / f"{stem}_camera.json").read_text())
            assert cam["extrinsic"]["baseline"] == pytest.approx(0.209313)
            assert cam["intrinsic"]["fx"] == pytest.approx(2262.52 * w / 2048)
            assert cam["intrinsic"]["fy"] == pytest.approx(2265.30 * h / 1024, rel=1e-4)
            assert cam["intrinsic"]["u0"] == pytest.approx(1096.98 * w / 2048)
            assert cam["intrinsic"]["v0"] == pytest.approx(513.137 * h / 1024)
            png = read(city.root / "disparity" / split / c / f"{stem}_disparity.png")
            assert png.dtype == np.uint16
            d = decode_cityscapes_disparity(png)
            depth = disparity_to_depth(d, cam["extrinsic"]["baseline"], cam["intrinsic"]["fx"])
            ids = read(city.root / "gtFine" / split / c / f"{stem}_gtFine_labelIds.png")
            truth = syn.render_frame(SEED, split, i, SIZE).left.depth
            sky = ids == syn.SKY
            assert (png[sky] == 0).all() and (truth[sky] == 0).all()
            valid = png > 0
            assert valid.mean() > 0.5 and (valid == (~sky & (truth > 0) & (d >= 1 / 256))).all()
            # the 1/256 px quantisation bounds the depth error: |dz| / z <= (1/512) / d
            rel = np.abs(depth[valid] - truth[valid]) / truth[valid]
            assert (rel <= (1 / 512) / d[valid] + 1e-5).all()
            assert truth[valid].max() < 250 and truth[valid].min() > 1


def stereo_pair(root: Path, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c, stem = syn.frame_name(split, index)
    left = read(root / "leftImg8bit" / split / c / f"{stem}_leftImg8bit.png")
    right = read(root / "rightImg8bit" / split / c / f"{stem}_rightImg8bit.png")
    disp = decode_cityscapes_disparity(read(root / "disparity" / split / c / f"{stem}_disparity.png"))
    return left, right, disp


def test_right_view_is_the_left_texture_shifted_by_the_disparity(city):
    """Sample the right image at x - d: away from occlusions it must show the left pixel."""
    for i in range(city.frames["train"]):
        left, right, disp = stereo_pair(city.root, "train", i)
        frame = syn.render_frame(SEED, "train", i, SIZE)
        h, w = disp.shape
        ys, xs = np.nonzero(disp > 0)
        xr = xs - disp[ys, xs]
        inside = xr >= 0
        ys, xs, xr = ys[inside], xs[inside], xr[inside]
        # visible in both views: the right camera sees the same depth there
        right_depth = frame.right.depth[ys, np.clip(np.round(xr).astype(int), 0, w - 1)]
        seen = np.abs(right_depth - frame.left.depth[ys, xs]) < 0.02 * frame.left.depth[ys, xs]
        assert seen.mean() > 0.8
        warped = cv2.remap(right, xr[seen].astype(np.float32)[None], ys[seen].astype(np.float32)[None], cv2.INTER_LINEAR)
        diff = np.abs(warped[0].astype(int) - left[ys[seen], xs[seen]].astype(int))
        # what remains is sensor noise and sub-pixel interpolation of texture
        assert np.median(diff) <= 4 and np.mean(diff) < 8


def test_sgbm_recovers_the_generated_disparity(city):
    """OpenCV SGBM (3-way, block 5, P1 = 8*3*5^2, P2 = 32*3*5^2) on generated pairs: median error < 1 px."""
    block = 5
    sgbm = cv2.StereoSGBM_create(
        minDisparity=0, numDisparities=64, blockSize=block, P1=8 * 3 * block**2, P2=32 * 3 * block**2,
        disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    errors, covered, total = [], 0, 0
    for i in range(city.frames["train"]):
        left, right, gt = stereo_pair(city.root, "train", i)
        pred = sgbm.compute(left, right).astype(np.float32) / 16
        valid = gt > 0
        valid[:, :64] = False  # no match can be searched for within numDisparities of the left border
        ok = valid & (pred >= 0)
        errors.append(np.abs(pred[ok] - gt[ok]))
        covered, total = covered + ok.sum(), total + valid.sum()
    err = np.concatenate(errors)
    assert covered / total > 0.85
    assert np.median(err) < 1.0
    assert (err < 3).mean() > 0.85


def test_renderer_projects_a_known_rectangle(city):
    """A lone frontal rectangle 10 m ahead lands where the pinhole model puts it, at its depth."""
    camera = syn.StereoCamera.cityscapes(SIZE)
    pose = syn.CameraPose(height=1.5, pitch=0.0, yaw=0.0)
    quad = syn.Quad(2, 10.0, -1.0, 2.0, 0.5, 2.5, 0, syn.BUILDING, "concrete", {"k": 0, "base": np.full(3, 0.5, np.float32)})
    scene = syn.sample_scene(np.random.default_rng(0))
    scene.pose, scene.quads = pose, [quad]
    for side, cx in (("left", 0.0), ("right", camera.baseline)):
        view = syn.render_view(scene, camera, SIZE, side)
        ys, xs = np.nonzero(view.label == syn.BUILDING)
        # X = cx + 10 (x - u0) / fx, Y = 1.5 - 10 (y - v0) / fy
        assert xs.min() == np.ceil(camera.u0 + camera.fx * (-1.0 - cx) / 10)
        assert xs.max() == np.floor(camera.u0 + camera.fx * (2.0 - cx) / 10)
        assert ys.min() == np.ceil(camera.v0 + camera.fy * (1.5 - 2.5) / 10)
        assert ys.max() == np.floor(camera.v0 + camera.fy * (1.5 - 0.5) / 10)
        assert np.allclose(view.depth[ys, xs], 10.0) and (view.depth[view.label == syn.SKY] == 0).all()
        assert view.instance.max() == 0
    disparity = camera.disparity(np.array([10.0], np.float32))
    assert disparity[0] == pytest.approx(camera.fx * camera.baseline / 10)
