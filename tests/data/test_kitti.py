"""The kitti format: raw images with LiDAR ground truth, the labelled frames, their splits and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mtdense.cli import main
from mtdense.data.check import check_dataset, tree_format
from mtdense.data.kitti import (
    KittiDataset,
    garg_crop_mask,
    kitti_eval_depth,
    list_kitti_frames,
    load_kitti_frame,
)
from mtdense.data.image import read_image
from mtdense.data.labels import TRAIN_CLASS_NAMES
from mtdense.data.open import detect_format, open_dataset

H, W = 32, 96
DRIVES = {  # split -> drive -> frames with ground truth
    "train": {"2011_09_26_drive_0001_sync": ["0000000005", "0000000006", "0000000007"],
              "2011_09_28_drive_0002_sync": ["0000000005", "0000000006"]},
    "val": {"2011_09_26_drive_0005_sync": ["0000000005", "0000000006"]},
}
SEMANTIC = [f"{i:06d}_10" for i in range(6)]
# Cityscapes label ids and the train ids they map to: road 7 -> 0, car 26 -> 13, sky 23 -> 10,
# unlabeled 0 and ego vehicle 1 -> 255 (ignore).
IDS = np.array([0, 1, 7, 23, 26], np.uint8)
TRAIN_IDS = np.array([255, 255, 0, 10, 13], np.uint8)


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if rgb else array)


def raw_path(root: Path, drive: str, frame: str) -> Path:
    return root / "raw" / drive[:10] / drive / "image_02" / "data" / f"{frame}.png"


def gt_path(root: Path, split: str, drive: str, frame: str) -> Path:
    return root / "data_depth_annotated" / split / drive / "proj_depth" / "groundtruth" / "image_02" / f"{frame}.png"


def make_kitti(root: Path, seed: int = 0) -> dict:
    """A tiny KITTI tree; returns what was written (images RGB, depth PNG values, label ids)."""
    rng = np.random.default_rng(seed)
    written: dict = {"image": {}, "depth": {}, "ids": {}}
    for split, drives in DRIVES.items():
        for drive, frames in drives.items():
            _write(raw_path(root, drive, "0000000000"), _image(rng), rgb=True)  # a raw frame without ground truth
            for frame in frames:
                name = f"{drive}_{frame}"
                written["image"][name] = image = _image(rng)
                _write(raw_path(root, drive, frame), image, rgb=True)
                values = rng.integers(1, 30000, (H, W)).astype(np.uint16)
                values[rng.random((H, W)) < 0.8] = 0  # sparse: most pixels have no LiDAR point
                values[0, :4] = [256, 2560, 1, 65535]  # 1 m, 10 m, 1/256 m, 255.996 m
                written["depth"][name] = values
                _write(gt_path(root, split, drive, frame), values)
    for name in SEMANTIC:
        written["image"][name] = image = _image(rng)
        ids = IDS[rng.integers(0, len(IDS), (H, W))]
        written["ids"][name] = ids
        _write(root / "data_semantics" / "training" / "image_2" / f"{name}.png", image, rgb=True)
        _write(root / "data_semantics" / "training" / "semantic" / f"{name}.png", ids)
    return written


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("kitti") / "kitti"
    return root, make_kitti(root)


@pytest.fixture
def copy(kitti, tmp_path) -> Path:
    """A copy of the tiny tree to break."""
    return Path(shutil.copytree(kitti[0], tmp_path / "kitti"))


def test_depth_frames_read_back_exactly(kitti):
    root, written = kitti
    ds = KittiDataset(root, "train")
    assert len(ds) == 5 and ds.info.tasks == ("depth",) and ds.info.format == "kitti"
    assert ds.classes == TRAIN_CLASS_NAMES and ds.info.colors[0] == (128, 64, 128)
    sample = ds[0]
    name = "2011_09_26_drive_0001_sync_0000000005"
    assert sample["name"] == name and "seg" not in sample
    assert sample["image"].dtype == np.uint8 and np.array_equal(sample["image"], written["image"][name])
    depth = sample["depth"]
    assert depth.dtype == np.float32 and depth.shape == (H, W)
    assert np.array_equal(depth, (written["depth"][name] / 256.0).astype(np.float32))
    assert depth[0, :4].tolist() == [1.0, 10.0, 1 / 256, 65535 / 256] and (depth[written["depth"][name] == 0] == 0).all()
    assert sample["paths"] == {"image": str(raw_path(root, "2011_09_26_drive_0001_sync", "0000000005")),
                               "depth": str(gt_path(root, "train", "2011_09_26_drive_0001_sync", "0000000005"))}
    assert [f.name for f in KittiDataset(root, "val").frames] == [f"2011_09_26_drive_0005_sync_{f}" for f in
                                                                 DRIVES["val"]["2011_09_26_drive_0005_sync"]]


def test_semantic_frames_map_label_ids_to_train_ids(kitti):
    root, written = kitti
    ds = KittiDataset(root, "semantics")
    assert len(ds) == 6 and ds.info.tasks == ("seg",)
    for i, name in enumerate(SEMANTIC):
        sample = ds[i]
        assert sample["name"] == name and "depth" not in sample
        lut = np.zeros(256, np.uint8)
        lut[IDS] = TRAIN_IDS
        assert sample["seg"].dtype == np.uint8 and np.array_equal(sample["seg"], lut[written["ids"][name]])
        assert np.array_equal(sample["image"], written["image"][name])
    # every fifth labelled frame (by name) is held out for validation
    held_out = [f.name for f in KittiDataset(root, "semantics_val").frames]
    assert held_out == ["000000_10", "000005_10"]
    assert [f.name for f in KittiDataset(root, "semantics_train").frames] == ["000001_10", "000002_10", "000003_10",
                                                                            "000004_10"]


def test_joined_split_fills_the_missing_labels(kitti):
    root, _ = kitti
    ds = KittiDataset(root, "train+semantics_train")
    assert len(ds) == 9 and ds.info.tasks == ("seg", "depth")
    depth_frame, labelled = ds[0], ds[8]
    assert (depth_frame["seg"] == 255).all() and depth_frame["seg"].dtype == np.uint8
    assert (labelled["depth"] == 0).all() and labelled["depth"].dtype == np.float32
    assert (labelled["seg"] != 255).any() and (depth_frame["depth"] > 0).any()
    assert depth_frame["paths"]["label"] == "" and labelled["paths"]["depth"] == ""
    # a split without labelled frames carries seg when asked (all ignored), so validation batches collate
    val = KittiDataset(root, "val", tasks=["seg", "depth"])
    assert val.info.tasks == ("seg", "depth") and (val[0]["seg"] == 255).all()
    with pytest.raises(ValueError, match="KITTI has no labels for normals"):
        KittiDataset(root, "val", tasks=["normals"])
    with pytest.raises(ValueError, match=r"unknown kitti split 'test' in 'train\+test'; known: train, val, semantics"):
        KittiDataset(root, "train+test")
    # a part repeated *N times holds its frames N times (the labelled frames are few)
    repeated = KittiDataset(root, "train+semantics_train*3")
    assert len(repeated) == 5 + 3 * 4 and [f.name for f in repeated.frames[5:9]] == [f.name for f in repeated.frames[9:13]]
    for bad, message in (("semantics*0", r"repeats the frames '\*0' times"), ("val+val", "names a part twice"),
                         ("semantics+semantics_val", "semantics already holds")):
        with pytest.raises(ValueError, match=message):
            KittiDataset(root, bad)


def test_open_dataset_detects_kitti(kitti, tmp_path):
    root, _ = kitti
    assert detect_format(root) == "kitti" and tree_format(root) == "kitti"
    ds = open_dataset(root, "val")
    assert isinstance(ds, KittiDataset) and len(ds) == 2 and ds.classes == TRAIN_CLASS_NAMES
    assert open_dataset(root, "semantics", format="kitti", cache_in_memory=True)._cache is not None
    only_semantics = tmp_path / "sem"
    shutil.copytree(root / "data_semantics", only_semantics / "data_semantics")
    assert detect_format(only_semantics) == "kitti"
    with pytest.raises(ValueError, match=r"the kitti format takes no depth_source; its options: transform, "
                                         r"cache_in_memory, tasks"):
        open_dataset(root, "train", depth_source="disparity")


def test_a_depth_map_without_its_raw_image_names_the_drive_folder(copy):
    drive = "2011_09_26_drive_0001_sync"
    raw_path(copy, drive, "0000000006").unlink()
    with pytest.raises(ValueError, match=r"0000000006\.png: no raw image .*raw/2011_09_26/2011_09_26_drive_0001_sync/"
                                         r"image_02/data/0000000006\.png; restore the frame"):
        KittiDataset(copy, "train")
    _write(raw_path(copy, drive, "0000000006"), np.zeros((H, W, 3), np.uint8))
    shutil.rmtree(copy / "raw" / "2011_09_28")
    with pytest.raises(ValueError, match=r"2 depth maps but no raw images: the raw drive folder .*raw/2011_09_28/"
                                         r"2011_09_28_drive_0002_sync/image_02/data is missing or empty; extract the raw "
                                         r"recording 2011_09_28_drive_0002_sync \(from 2011_09_28/2011_09_28_drive_0002_sync\.zip of the KITTI raw "
                                         r"data\) into .*raw/2011_09_28$"):
        KittiDataset(copy, "train")
    KittiDataset(copy, "val")  # the other split is fine


@pytest.mark.parametrize("what, edit, message", [
    ("8-bit depth", lambda r: _write(gt_path(r, "val", "2011_09_26_drive_0005_sync", "0000000005"),
                                     np.zeros((H, W), np.uint8)),
     r"0000000005\.png: a uint8 image with 1 channel, not the 16-bit single-channel PNG of the depth benchmark"),
    ("depth of another size", lambda r: _write(gt_path(r, "val", "2011_09_26_drive_0005_sync", "0000000005"),
                                               np.zeros((H - 8, W), np.uint16)),
     r"0000000005\.png: 24x96 \(H x W\) but its image .*0000000005\.png is 32x96"),
    ("16-bit label", lambda r: _write(r / "data_semantics/training/semantic/000000_10.png", np.zeros((H, W), np.uint16)),
     r"000000_10\.png: a uint16 image with 1 channel, not one 8-bit channel of Cityscapes label ids"),
    ("label of another size", lambda r: _write(r / "data_semantics/training/semantic/000000_10.png",
                                               np.zeros((H, W - 8), np.uint8)),
     r"000000_10\.png: 32x88 \(H x W\) but its image"),
    ("unknown label id", lambda r: _write(r / "data_semantics/training/semantic/000000_10.png",
                                          np.full((H, W), 34, np.uint8)),
     r"000000_10\.png: label ids \[34\] are not in the Cityscapes label table"),
    ("colour label", lambda r: _write(r / "data_semantics/training/semantic/000000_10.png",
                                      np.zeros((H, W, 3), np.uint8)),
     r"not one 8-bit channel of Cityscapes label ids; use the file from semantic/"),
])
def test_bad_files_are_refused_naming_the_file(copy, what, edit, message):
    edit(copy)
    frames = list_kitti_frames(copy, "val+semantics")
    bad = next(f for f in frames if f.name in ("2011_09_26_drive_0005_sync_0000000005", "000000_10")
               and (f.depth if "depth" in what else f.semantic) is not None)
    with pytest.raises(ValueError, match=message):
        load_kitti_frame(bad, ("seg", "depth"))


def test_layout_errors_and_empty_splits(copy, tmp_path):
    (copy / "data_semantics/training/image_2/000003_10.png").unlink()
    with pytest.raises(ValueError, match=r"semantic/000003_10\.png: no image .*image_2/000003_10\.png"):
        KittiDataset(copy, "semantics")
    renamed = copy / "data_depth_annotated/val/drive_5"
    (copy / "data_depth_annotated/val/2011_09_26_drive_0005_sync").rename(renamed)
    with pytest.raises(ValueError, match=r"drive_5: not a KITTI drive name \(DATE_drive_NNNN_sync"):
        KittiDataset(copy, "val")
    only_semantics = tmp_path / "sem"
    shutil.copytree(copy / "data_semantics", only_semantics / "data_semantics")
    with pytest.raises(ValueError, match=r"kitti split 'train' has no frames \(looked in .*data_depth_annotated/train\); "
                                         r"extract data_depth_annotated\.zip"):
        KittiDataset(only_semantics, "train")
    with pytest.raises(FileNotFoundError, match="has none of raw/, data_depth_annotated/, data_semantics/"):
        KittiDataset(tmp_path, "train")


def test_data_check_lists_every_problem(kitti, copy, capsys):
    clean = check_dataset(kitti[0], progress=False)
    assert clean.format == "kitti" and clean.ok and list(clean.splits) == ["train", "val", "semantics"]
    assert (clean.splits["train"].images, clean.splits["train"].depths, clean.splits["semantics"].labels) == (5, 5, 6)
    assert clean.splits["train"].depth_range == (1 / 256, 65535 / 256)
    assert "KITTI tree" in clean.summary()

    raw_path(copy, "2011_09_26_drive_0001_sync", "0000000006").unlink()
    _write(gt_path(copy, "val", "2011_09_26_drive_0005_sync", "0000000006"), np.zeros((H, W), np.uint8))
    _write(copy / "data_semantics/training/semantic/000002_10.png", np.full((H, W), 40, np.uint8))
    _write(copy / "data_semantics/training/semantic/000004_10.png", np.zeros((H, 10), np.uint8))
    report = check_dataset(copy, progress=False)
    errors = {Path(p.file).name: p for p in report.errors}
    assert set(errors) == {"0000000006.png", "000002_10.png", "000004_10.png"} and len(report.errors) == 4
    assert "no raw image" in next(p.message for p in report.errors if "train" in p.file)
    assert any("not the 16-bit single-channel PNG" in p.message for p in report.errors)
    assert "label ids [40] are not in the Cityscapes label table" in errors["000002_10.png"].message
    assert "32x10 (H x W) but its image" in errors["000004_10.png"].message
    assert main(["data", "check", str(copy), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 4 errors" in out and "KITTI tree" in out


def test_garg_crop_and_the_80_m_cap():
    mask = garg_crop_mask(375, 1242)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert mask.sum() == (371 - 153) * (1197 - 44)
    depth = np.full((375, 1242), 90.0, np.float32)
    depth[200, 100], depth[10, 100] = 30.0, 30.0  # inside and outside the crop
    out = kitti_eval_depth(depth)
    assert out.dtype == np.float32 and out[200, 100] == 30.0 and (out > 0).sum() == 1
    assert (kitti_eval_depth(depth, garg_crop=False, max_depth_m=None) == depth).all()
    batch = torch.from_numpy(depth)[None].repeat(2, 1, 1)
    assert torch.equal(kitti_eval_depth(batch), torch.from_numpy(out)[None].repeat(2, 1, 1))


def test_the_kitti_recipe_is_valid():
    from mtdense.train.schema import load_recipe

    recipe, _ = load_recipe("kitti_mobilenet_v3_small", check_paths=False)
    assert recipe.data.format == "kitti" and recipe.data.splits() == ("train+semantics_train*50", "val+semantics_val")
    assert recipe.model.tasks == {"seg": 19, "depth": 1} and [s.name for s in recipe.stages] == ["seed", "half", "full"]
    seed, half, full = recipe.stages
    assert seed.train_split == "semantics_train*10" and seed.pseudo_label is None and full.pseudo_label is None
    assert half.pseudo_label.out == "semantic_pseudo" and half.pseudo_label.threshold == 0.9
    assert recipe.data.sources == {"seg": ["semantic", "semantic_pseudo"]}


def test_training_steps_through_the_cli(kitti, tmp_path):
    from mtdense import load_model
    from mtdense.data.description import model_dataset_info

    recipe = {
        "name": "tiny_kitti",
        "data": {"root": str(kitti[0]), "format": "kitti", "num_workers": 0},
        "model": {"encoder": "mobilenet_v3_small", "decoder_channels": 16, "pretrained": False},
        "loss": {"class_weights": "enet"},  # counted on the labelled frames of the training split
        "stages": [{"name": "s0", "size": [H, W], "epochs": 1, "batch_size": 3, "lr": 2e-3}],
        "trainer": {"accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "log_every_n_steps": 1, "progress_bar": False},
    }
    path = tmp_path / "kitti.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    model = load_model(run / "model.pth")
    assert model.tasks == {"seg": 19, "depth": 1}
    info = model_dataset_info(model)
    assert info.format == "kitti" and info.tasks == ("seg", "depth") and list(info.classes) == TRAIN_CLASS_NAMES
    from mtdense.models.weights import read_checkpoint

    weights = read_checkpoint(run / "stage0-s0" / "checkpoints" / "last.ckpt")["hyper_parameters"]["loss_config"]
    weights = weights["class_weights"]
    assert len(weights) == 19 and weights[0] < weights[1]  # road (train id 0) is labelled, sidewalk is not
    metrics = (run / "stage0-s0" / "csv").rglob("metrics.csv")
    header = next(metrics).read_text().splitlines()[0]
    assert "val/miou" in header and "val/abs_rel" in header


@pytest.fixture(scope="module")
def kitti_ckpt(tmp_path_factory) -> Path:
    import mtdense
    from mtdense.data.kitti import kitti_info

    torch.manual_seed(0)
    model = mtdense.create_model(decoder_channels=16).eval()
    model.dataset_info = kitti_info().to_dict()
    return mtdense.save_checkpoint(model, tmp_path_factory.mktemp("kitti_model") / "model.pth")


def test_evaluate_with_the_garg_crop_and_the_80_m_cap(kitti, kitti_ckpt, tmp_path):
    """evaluate --format kitti --garg-crop --max-depth 80: depth figures over the LiDAR points inside
    the crop and within 80 m, predictions clipped to 80 m, equal to a hand computation; metrics.json
    says which options made them."""
    import json

    from mtdense.inference import Predictor

    root, written = kitti
    out = tmp_path / "eval"
    assert main(["evaluate", str(kitti_ckpt), "--data", str(root), "--format", "kitti", "--split", "val",
                 "--garg-crop", "--max-depth", "80", "--out", str(out), "--workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluation"] == {"format": "kitti", "split": "val", "size": None, "garg_crop": True,
                                     "max_depth_m": 80.0, "label_sources": {"depth": "groundtruth"}}
    predictor = Predictor(kitti_ckpt)
    p_all, g_all = [], []
    for frame in DRIVES["val"]["2011_09_26_drive_0005_sync"]:
        name = f"2011_09_26_drive_0005_sync_{frame}"
        pred = predictor.predict(written["image"][name]).depth.astype(np.float64)
        gt = written["depth"][name].astype(np.float64) / 256
        keep = garg_crop_mask(H, W) & (gt > 1e-3) & (gt <= 80)
        p_all.append(np.clip(pred[keep], 1e-3, 80))
        g_all.append(gt[keep])
    p, g = np.concatenate(p_all), np.concatenate(g_all)
    assert 0 < g.size < 2 * H * W
    assert metrics["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-5)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-5)
    assert metrics["delta1"] == pytest.approx(np.mean(np.maximum(p / g, g / p) < 1.25), abs=1e-6)
    assert "miou" not in metrics  # the val depth frames carry no segmentation
    assert main(["evaluate", str(kitti_ckpt), "--data", str(root), "--split", "val", "--out", str(out), "--workers", "0"]) == 0
    plain = json.loads((out / "metrics.json").read_text())
    assert plain["evaluation"]["garg_crop"] is False and plain["evaluation"]["max_depth_m"] is None
    assert plain["abs_rel"] != pytest.approx(metrics["abs_rel"])


def test_analyze_reads_kitti(kitti, kitti_ckpt, tmp_path):
    import json

    out = tmp_path / "analysis"
    assert main(["analyze", str(kitti_ckpt), "--data", str(kitti[0]), "--format", "kitti", "--split", "val+semantics_val",
                 "--out", str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["samples"] == 2 + 2 and data["depth"]["abs_rel"] is not None  # 2 depth frames, 2 labelled ones
    assert data["segmentation"]["pixel_acc"] is not None


def test_analyze_takes_the_garg_crop_and_the_cap_as_evaluate_does(kitti, kitti_ckpt, tmp_path):
    import json

    root = kitti[0]
    assert main(["evaluate", str(kitti_ckpt), "--data", str(root), "--split", "val", "--garg-crop", "--max-depth", "80",
                 "--out", str(tmp_path / "eval"), "--workers", "0"]) == 0
    assert main(["analyze", str(kitti_ckpt), "--data", str(root), "--split", "val", "--garg-crop", "--max-depth", "80",
                 "--out", str(tmp_path / "crop")]) == 0
    assert main(["analyze", str(kitti_ckpt), "--data", str(root), "--split", "val", "--out", str(tmp_path / "plain")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    crop = json.loads((tmp_path / "crop" / "metrics.json").read_text())
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert crop["evaluation"] == {"max_depth_m": 80.0, "garg_crop": True}
    assert plain["evaluation"] == {"max_depth_m": 250.0, "garg_crop": False}
    for key in ("abs_rel", "rmse", "delta1"):
        assert crop["depth"][key] == pytest.approx(evaluated[key], rel=1e-4)
    assert crop["depth"]["abs_rel"] != pytest.approx(plain["depth"]["abs_rel"])
    pixels = sum(b["pixels"] for b in crop["error_vs_distance"])
    assert 0 < pixels < sum(b["pixels"] for b in plain["error_vs_distance"])  # fewer points: only those in the crop


def test_the_garg_crop_is_refused_outside_kitti(tmp_path, capsys):
    import mtdense

    root = tmp_path / "data"
    (root / "images" / "val").mkdir(parents=True)
    (root / "dataset.yaml").write_text("classes: [a, b]\n")
    assert cv2.imwrite(str(root / "images" / "val" / "x.png"), np.zeros((32, 32, 3), np.uint8))
    model = mtdense.create_model(tasks={"seg": 2, "depth": 1}, decoder_channels=16)
    model.dataset_info = {"classes": ["a", "b"]}
    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    assert main(["evaluate", str(ckpt), "--data", str(root), "--garg-crop", "--workers", "0"]) == 2
    assert "the Garg crop is the KITTI evaluation convention" in capsys.readouterr().err
    assert main(["evaluate", str(ckpt), "--data", str(root), "--max-depth", "0", "--workers", "0"]) == 2
    assert "--max-depth 0: give a cap in metres > 0" in capsys.readouterr().err
    assert main(["analyze", str(ckpt), "--data", str(root), "--split", "val", "--garg-crop", "--out", str(tmp_path / "a")]) == 2
    assert "--garg-crop: the Garg et al. crop is defined on KITTI frames" in capsys.readouterr().err
    assert main(["analyze", str(ckpt), "--data", str(root), "--split", "val", "--max-depth", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "--max-depth -1: give a cap in metres > 0" in capsys.readouterr().err


# --- the pseudo-label step: label sources, the writer, the recipe stage -------------------------

def _pseudo_ids(root: Path, split: str, name: str, ids: np.ndarray, out: str = "semantic_pseudo") -> Path:
    path = root / out / split / f"{name}.png"
    _write(path, ids)
    return path


def test_label_sources_take_the_real_label_first_then_the_teachers(kitti, copy):
    from mtdense.data.kitti import KittiDataset

    named = "2011_09_26_drive_0001_sync_0000000005"
    teacher = np.full((H, W), 26, np.uint8)  # car everywhere
    teacher[:, : W // 2] = 0  # unsure: ignored
    _pseudo_ids(copy, "train", named, teacher)
    _pseudo_ids(copy, "semantics", SEMANTIC[0], np.full((H, W), 7, np.uint8))  # must lose to the real label
    ds = KittiDataset(copy, "train+semantics", sources={"seg": ["semantic", "semantic_pseudo"]})
    assert ds.info.tasks == ("seg", "depth")
    by_name = {ds[i]["name"]: ds[i] for i in range(len(ds))}
    taught = by_name[named]
    assert taught["sources"] == {"seg": "semantic_pseudo", "depth": "groundtruth"}
    assert (taught["seg"][:, : W // 2] == 255).all() and (taught["seg"][:, W // 2:] == 13).all()
    assert taught["depth"].any()
    real = by_name[SEMANTIC[0]]
    assert real["sources"] == {"seg": "semantic", "depth": ""}
    lut = np.full(256, 255, np.uint8)
    lut[IDS] = TRAIN_IDS
    assert np.array_equal(real["seg"], lut[kitti[1]["ids"][SEMANTIC[0]]])
    bare = by_name["2011_09_26_drive_0001_sync_0000000006"]  # no teacher label: seg skipped
    assert bare["sources"]["seg"] == "" and (bare["seg"] == 255).all()
    # Without sources, nothing of the teacher's is read, and samples carry no sources.
    plain = KittiDataset(copy, "train+semantics", tasks=["seg", "depth"])
    assert "sources" not in plain[0] and (plain[0]["seg"] == 255).all()


@pytest.mark.parametrize("sources, message", [
    ({"depth": ["groundtruth"]}, "seg only"),
    ({"seg": ["semantic_pseudo"]}, "leaves out the real labels"),
    ({"seg": ["semantic", "raw"]}, "is a KITTI folder"),
    ({"seg": ["semantic", "a/b"]}, "not a folder name"),
    ({"seg": ["semantic", "x", "x"]}, "named twice"),
])
def test_bad_label_sources_are_refused(kitti, sources, message):
    from mtdense.data.kitti import KittiDataset

    with pytest.raises(ValueError, match=message):
        KittiDataset(kitti[0], "train", sources=sources)


def test_pseudo_label_kitti_writes_resumes_and_relabels_for_another_model(copy, kitti_ckpt):
    from mtdense.data.kitti import read_kitti_semantic
    from mtdense.teachers.model import PseudoLabeler, kitti_manifest_path, pseudo_label_kitti

    labeler = PseudoLabeler(kitti_ckpt, threshold=0.0)
    summary = pseudo_label_kitti(copy, labeler, split="train+semantics_train*3", progress=False, model_id="a")
    assert summary.labelled == 5 and summary.annotated == 4 and summary.kept == 0 and not summary.failed
    name = "2011_09_28_drive_0002_sync_0000000006"
    path = copy / "semantic_pseudo" / "train" / f"{name}.png"
    expected, _ = labeler.predict(read_image(raw_path(copy, "2011_09_28_drive_0002_sync", "0000000006")))
    assert np.array_equal(read_kitti_semantic(path), expected)  # label ids that map back to the model's argmax
    record = yaml.safe_load(kitti_manifest_path(copy, "semantic_pseudo").read_text())
    assert record["model_id"] == "a" and len(record["labelled"]) == 5 and f"train/{name}" in record["labelled"]
    again = pseudo_label_kitti(copy, labeler, split="train", progress=False, model_id="a")
    assert again.labelled == 0 and again.kept == 5  # resumed: nothing redone
    other = pseudo_label_kitti(copy, PseudoLabeler(kitti_ckpt, threshold=1.0), split="train", progress=False, model_id="b")
    assert other.labelled == 5  # another model: every frame relabelled, none mixed in
    assert (read_kitti_semantic(path) == 255).all()  # nothing is that sure: all ignored
    with pytest.raises(ValueError, match="is a KITTI folder"):
        pseudo_label_kitti(copy, labeler, split="train", out="raw", progress=False)


def test_pseudo_label_command_on_a_kitti_root(copy, kitti_ckpt, capsys):
    assert main(["data", "pseudo-label", str(kitti_ckpt), str(copy), "--threshold", "0", "--quiet"]) == 0
    assert sorted(p.name for p in (copy / "semantic_pseudo" / "val").glob("*.png")) == [] and \
        len(list((copy / "semantic_pseudo" / "train").glob("*.png"))) == 5
    assert main(["data", "pseudo-label", str(kitti_ckpt), str(copy), "--split", "val", "--out", "teach"]) == 0
    out = capsys.readouterr().out
    assert "pseudo-labels for val: 2 images, 2 labelled" in out and len(list((copy / "teach" / "val").glob("*.png"))) == 2


def _stage_recipe(root: Path, **seed: object) -> dict:
    return {
        "name": "tiny_kitti_pseudo",
        "data": {"root": str(root), "format": "kitti", "num_workers": 0, "train_split": "train+semantics_train*2",
                 "sources": {"seg": ["semantic", "semantic_pseudo"]}, "teacher_weight": {"seg": 0.5}},
        "model": {"encoder": "mobilenet_v3_small", "decoder_channels": 16, "pretrained": False},
        "stages": [{"name": "seed", "train_split": "semantics_train", "size": [H, W], "epochs": 1, "batch_size": 2,
                    "lr": 2e-3, **seed},
                   {"name": "joint", "pseudo_label": {"threshold": 0.0}, "size": [H, W], "epochs": 1, "batch_size": 3,
                    "lr": 2e-3}],
        "trainer": {"accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "log_every_n_steps": 1, "progress_bar": False},
    }


def test_recipe_pseudo_label_step_through_the_cli(copy, tmp_path):
    """Stage 0 trains on the labelled frames, stage 1 first labels the depth frames with it."""
    import hashlib

    from mtdense.teachers.model import kitti_manifest_path

    path = tmp_path / "kitti.yaml"
    path.write_text(yaml.safe_dump(_stage_recipe(copy)))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    labels = sorted((copy / "semantic_pseudo" / "train").glob("*.png"))
    assert len(labels) == 5  # every depth frame of train; no labelled frame relabelled
    assert not (copy / "semantic_pseudo" / "semantics").exists()
    seed = run / "stage0-seed" / "checkpoints" / "last.ckpt"
    record = yaml.safe_load(kitti_manifest_path(copy, "semantic_pseudo").read_text())
    assert record["model_id"] == hashlib.sha256(seed.read_bytes()).hexdigest() and record["checkpoint"] == str(seed.resolve())
    assert (run / "stage1-joint" / "checkpoints" / "last.ckpt").is_file() and (run / "model.pth").is_file()
    from mtdense.models.weights import read_checkpoint

    saved = read_checkpoint(seed)
    assert saved["global_step"] == 2  # the seed stage saw the 4 labelled training frames, 2 a batch
    # Its batches had no depth at all: the depth loss skipped them instead of turning the weights into NaN.
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    rows = next((run / "stage0-seed" / "csv").rglob("metrics.csv")).read_text().splitlines()
    losses = [float(v) for row in rows[1:] for k, v in zip(rows[0].split(","), row.split(",")) if k == "train/loss" and v]
    assert losses and all(np.isfinite(losses))


@pytest.mark.parametrize("edit, key", [
    (lambda r: r["stages"][1].pop("pseudo_label") and r["stages"][0].update(pseudo_label={}), "stages[0].pseudo_label"),
    (lambda r: r["data"].update(sources={"seg": ["semantic", "other"]}), "stages[1].pseudo_label"),
    (lambda r: r["data"].update(sources={"seg": ["semantic"]}, teacher_weight={}), "stages[1].pseudo_label"),
])
def test_bad_pseudo_label_steps_are_recipe_errors(kitti, edit, key):
    from mtdense.train.schema import RecipeError, recipe_from_dict

    data = _stage_recipe(kitti[0])
    edit(data)
    with pytest.raises(RecipeError, match=key.replace("[", r"\[").replace("]", r"\]")):
        recipe_from_dict(data, check_paths=False)


def test_the_pseudo_label_step_is_kitti_only(tmp_path):
    from mtdense.train.schema import RecipeError, recipe_from_dict

    data = _stage_recipe(tmp_path)
    data["data"] = {"root": str(tmp_path), "format": "folder", "sources": {"seg": ["masks", "semantic_pseudo"]}}
    with pytest.raises(RecipeError, match="mtdense data teacher"):
        recipe_from_dict(data, check_paths=False)
