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


def test_normals_are_exact_unit_normals_of_the_rendered_surfaces(city):
    """Each pixel's normal is perpendicular to its surface (back-projected from the rendered
    depth), faces the camera, and is zero exactly on the sky; the PNG holds it within its
    quantisation and the Cityscapes reader gives it back."""
    from mtdense.data.cityscapes import CityscapesDataset
    from mtdense.data.normals import read_normals_png

    frame = syn.render_frame(SEED, "train", 0, SIZE)
    view, cam = frame.left, frame.camera
    n, depth = view.normals, view.depth
    sky = view.label == syn.SKY
    assert n.shape == (*SIZE, 3) and n.dtype == np.float32
    assert (n[sky] == 0).all() and (depth[sky] == 0).all()
    np.testing.assert_allclose(np.linalg.norm(n[~sky], axis=1), 1.0, rtol=1e-6)
    # back-project: P = depth * ((u - u0) / fx, (v - v0) / fy, 1), camera coordinates (right, down, forward)
    v, u = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    P = depth[..., None] * np.stack([(u - cam.u0) / cam.fx, (v - cam.v0) / cam.fy, np.ones_like(u, float)], -1)
    assert ((n * P).sum(-1)[~sky] < 0).all()  # the visible side faces the camera
    # along rows and columns inside one surface (same normal, same object and class) P moves in its plane
    cosines = []
    for axis in (0, 1):
        a, b = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        a2, b2 = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        same = (~sky[a, b] & ~sky[a2, b2] & (n[a, b] == n[a2, b2]).all(-1) & (view.label[a, b] == view.label[a2, b2])
                & (view.instance[a, b] == view.instance[a2, b2]))
        t = (P[a2, b2] - P[a, b])[same]
        cosines.append(np.abs((n[a, b][same] * t).sum(-1)) / np.linalg.norm(t, axis=1))
    cosines = np.concatenate(cosines)
    assert cosines.size > SIZE[0] * SIZE[1]  # most neighbours share a surface
    assert np.median(cosines) < 1e-4 and np.mean(cosines < 1e-3) > 0.97  # the rest: two parallel surfaces meeting
    c, stem = syn.frame_name("train", 0)
    png = city.root / "normals" / "train" / c / f"{stem}_normals.png"
    decoded = read_normals_png(png)
    assert (decoded[sky] == 0).all() and (decoded[~sky] != 0).any(axis=1).all()
    angle = np.degrees(np.arccos(np.clip((decoded[~sky] * n[~sky]).sum(1), -1, 1)))
    assert angle.max() < 0.5  # the 8-bit quantisation
    sample = CityscapesDataset(city.root, "train", load_normals=True)[0]
    np.testing.assert_array_equal(sample["normals"], decoded)
    assert "normals" not in CityscapesDataset(city.root, "train")[0]  # only when asked for
