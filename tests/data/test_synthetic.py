"""The synthetic stereo city: Cityscapes layout, exact stereo geometry, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtdense.cli import main
from mtdense.data import synthetic as syn
from mtdense.data.depth import decode_cityscapes_disparity, disparity_to_depth
from mtdense.data.labels import LABEL_ID_COLORS, VALID_LABEL_IDS, label_ids_to_train_ids

SIZE = (128, 256)
SEED = 5
REQUIRED = ("road", "sidewalk", "building", "sky", "vegetation", "pole", "traffic sign", "car", "person")


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> syn.SyntheticCity:
    """3 train, 1 val and 1 test frames at 128 x 256, generated in this process."""
    return syn.generate_city(tmp_path_factory.mktemp("synth") / "city", 3, 1, n_test=1, size=SIZE, seed=SEED,
                             progress=False, workers=0)


def files(root: Path, folder: str, split: str, suffix: str) -> list[Path]:
    return sorted(root.glob(f"{folder}/{split}/*/*_{suffix}"))


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def test_summary_and_meta_file_describe_the_city(city):
    assert city.frames == {"train": 3, "val": 1, "test": 1}
    meta = json.loads((city.root / syn._META_FILE).read_text())
    assert meta["seed"] == SEED and meta["size"] == list(SIZE) and meta["frames"] == city.frames
    assert not (city.root / syn._PARTIAL_FILE).exists()
    for split, n in city.frames.items():
        assert len(files(city.root, "leftImg8bit", split, "leftImg8bit.png")) == n
        for folder, suffix in [("rightImg8bit", "rightImg8bit.png"), ("disparity", "disparity.png"),
                               ("camera", "camera.json"), ("gtFine", "gtFine_labelIds.png"),
                               ("gtFine", "gtFine_color.png"), ("gtFine", "gtFine_instanceIds.png"),
                               ("gtFine", "gtFine_polygons.json")]:
            assert len(files(city.root, folder, split, suffix)) == n, (folder, suffix, split)
    shares = city.class_frequencies()
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert set(REQUIRED) <= set(shares), f"missing classes: {set(REQUIRED) - set(shares)}"
    counts = sum(np.bincount(read(p).ravel(), minlength=256) for p in files(city.root, "gtFine", "*", "gtFine_labelIds.png"))
    assert {name for name, share in shares.items()} == {syn._NAME[i] for i in np.nonzero(counts)[0]}


def test_torchvision_cityscapes_reads_every_target_type(city):
    from torchvision.datasets import Cityscapes

    ds = Cityscapes(str(city.root), split="train", mode="fine", target_type=["semantic", "color", "instance", "polygon"])
    assert len(ds) == 3
    for i in range(len(ds)):
        image, (semantic, color, instance, polygons) = ds[i]
        ids = np.asarray(semantic)
        assert image.size == (SIZE[1], SIZE[0]) and ids.shape == SIZE
        rgba = np.asarray(color)
        assert rgba.shape == (*SIZE, 4) and (rgba[..., 3] == 255).all()
        assert np.array_equal(rgba[..., :3], LABEL_ID_COLORS[ids])
        inst = np.asarray(instance).astype(np.int64)
        objects = inst >= 1000
        assert objects.any() and np.array_equal(inst[objects] // 1000, ids[objects])
        assert np.array_equal(inst[~objects], ids[~objects])
        assert set(np.unique(ids[objects]).tolist()) <= {syn.CAR, syn.PERSON}
        assert polygons["imgHeight"] == SIZE[0] and polygons["imgWidth"] == SIZE[1] and polygons["objects"]


def test_polygons_rebuild_the_label_map(city):
    pytest.importorskip("cityscapesscripts")
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    for path in files(city.root, "gtFine", "train", "gtFine_polygons.json"):
        annotation = Annotation()
        annotation.fromJsonFile(str(path))
        rebuilt = np.asarray(createLabelImage(annotation, "ids"))
        ids = read(Path(str(path).replace("_polygons.json", "_labelIds.png")))
        # contours run through boundary pixels, so only edge pixels may differ
        assert (rebuilt == ids).mean() > 0.97


def test_labels_are_valid_ids_of_train_classes(city):
    for path in files(city.root, "gtFine", "*", "gtFine_labelIds.png"):
        ids = read(path)
        assert ids.dtype == np.uint8 and ids.shape == SIZE
        assert np.isin(ids, VALID_LABEL_IDS).all()
        assert (label_ids_to_train_ids(ids) != 255).all()  # every pixel is one of the 19 classes


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


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    a = syn.generate_city(tmp_path / "a", 3, 1, size=(64, 128), seed=11, progress=False, workers=0)
    b = syn.generate_city(tmp_path / "b", 3, 1, size=(64, 128), seed=11, progress=False, workers=2)
    c = syn.generate_city(tmp_path / "c", 3, 1, size=(64, 128), seed=12, progress=False, workers=0)
    names = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert len(names) == 4 * 8 + 1
    for name in names:
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
    assert np.array_equal(a.label_pixels, b.label_pixels)
    for p in files(a.root, "leftImg8bit", "train", "leftImg8bit.png"):
        assert p.read_bytes() != (c.root / p.relative_to(a.root)).read_bytes()


def test_existing_city_needs_overwrite_and_foreign_trees_are_left_alone(tmp_path):
    root = tmp_path / "city"
    syn.generate_city(root, 3, 1, size=(64, 128), seed=0, progress=False, workers=0)
    with pytest.raises(FileExistsError, match="overwrite"):
        syn.generate_city(root, 2, 1, size=(64, 128), seed=0, progress=False, workers=0)
    summary = syn.generate_city(root, 2, 0, size=(64, 128), seed=1, progress=False, workers=0, overwrite=True)
    assert summary.frames == {"train": 2, "val": 0, "test": 0}
    assert len(files(root, "leftImg8bit", "train", "leftImg8bit.png")) == 2  # stale frames are gone
    assert not (root / "leftImg8bit" / "val").exists()
    assert json.loads((root / syn._META_FILE).read_text())["seed"] == 1

    foreign = tmp_path / "cityscapes"
    (foreign / "leftImg8bit" / "train").mkdir(parents=True)
    keep = foreign / "leftImg8bit" / "train" / "keep.png"
    keep.write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="did not write"):
        syn.generate_city(foreign, 1, 0, size=(64, 128), progress=False, workers=0, overwrite=True)
    assert keep.read_bytes() == b"not ours"


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="frame counts"):
        syn.generate_city(tmp_path / "x", -1, 0, progress=False)
    with pytest.raises(ValueError, match="size"):
        syn.generate_city(tmp_path / "x", 1, 0, size=(8, 128), progress=False)
    with pytest.raises(ValueError, match="seed"):
        syn.generate_city(tmp_path / "x", 1, 0, seed=-3, progress=False)
    with pytest.raises(FileNotFoundError, match="no frames to preview"):
        syn.save_preview(tmp_path, tmp_path / "p.png")


def test_cli_synth_with_preview_and_overwrite(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["data", "synth", str(out), "--n-train", "2", "--n-val", "1", "--size", "64", "128", "--seed", "3", "--preview", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "wrote train 2, val 1 frames" in printed and "class pixel share: road" in printed
    preview = read(out / "preview.png")
    assert preview.shape == (2 * 64, 4 * 128, 3)
    left = read(files(out, "leftImg8bit", "train", "leftImg8bit.png")[0])
    assert np.array_equal(preview[:64, :128], left)
    assert main(args) == 2
    assert "already holds a generated city" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--quiet"]) == 0


def test_cityscapes_dataset_reads_the_generated_city(city):
    cityscapes = pytest.importorskip("mtdense.data.cityscapes")
    ds = cityscapes.CityscapesDataset(city.root, "train", load_right=True)
    assert len(ds) == 3
    sample = ds[0]
    h, w = SIZE
    assert sample["image"].shape == (h, w, 3) and sample["right"].shape == (h, w, 3)
    truth = syn.render_frame(SEED, "train", 0, SIZE).left
    assert np.array_equal(sample["seg"], label_ids_to_train_ids(truth.label))
    valid = sample["depth"] > 0
    assert np.array_equal(valid, truth.label != syn.SKY)
    assert np.allclose(sample["depth"][valid], truth.depth[valid], rtol=0.02)


def test_city_settings_tell_a_generated_city_from_other_folders(city, tmp_path):
    settings = syn.city_settings(city.root)
    assert settings == json.loads((city.root / syn._META_FILE).read_text())
    assert settings["seed"] == SEED and settings["size"] == list(SIZE) and settings["frames"] == city.frames
    assert syn.is_generated_city(city.root)
    assert syn.city_settings(tmp_path) is None and not syn.is_generated_city(tmp_path)
    assert syn.city_settings(tmp_path / "missing") is None
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / syn._META_FILE).write_text('{"seed": 0, "size": [64')
    for call in (syn.city_settings, syn.is_generated_city):
        with pytest.raises(ValueError, match=syn._META_FILE):
            call(corrupt)
    (corrupt / syn._META_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        syn.city_settings(corrupt)
