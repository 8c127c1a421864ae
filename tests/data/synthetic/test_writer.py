"""The generated city on disk: Cityscapes layout readable by torchvision, cityscapesscripts and
mtdense, valid labels, determinism, overwrite rules, the CLI, and its settings file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synth_city import SEED, SIZE, files, read

from mtdense.cli import main
from mtdense.data import synthetic as syn
from mtdense.data.labels import LABEL_ID_COLORS, VALID_LABEL_IDS, label_ids_to_train_ids
from mtdense.data.synthetic.scene import _NAME
from mtdense.data.synthetic.writer import _META_FILE, _PARTIAL_FILE

REQUIRED = ("road", "sidewalk", "building", "sky", "vegetation", "pole", "traffic sign", "car", "person")


def test_summary_and_meta_file_describe_the_city(city):
    assert city.frames == {"train": 3, "val": 1, "test": 1}
    meta = json.loads((city.root / _META_FILE).read_text())
    assert meta["seed"] == SEED and meta["size"] == list(SIZE) and meta["frames"] == city.frames
    assert not (city.root / _PARTIAL_FILE).exists()
    for split, n in city.frames.items():
        assert len(files(city.root, "leftImg8bit", split, "leftImg8bit.png")) == n
        for folder, suffix in [("rightImg8bit", "rightImg8bit.png"), ("disparity", "disparity.png"),
                               ("camera", "camera.json"), ("gtFine", "gtFine_labelIds.png"),
                               ("gtFine", "gtFine_color.png"), ("gtFine", "gtFine_instanceIds.png"),
                               ("gtFine", "gtFine_polygons.json"), ("normals", "normals.png")]:
            assert len(files(city.root, folder, split, suffix)) == n, (folder, suffix, split)
    shares = city.class_frequencies()
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert set(REQUIRED) <= set(shares), f"missing classes: {set(REQUIRED) - set(shares)}"
    counts = sum(np.bincount(read(p).ravel(), minlength=256) for p in files(city.root, "gtFine", "*", "gtFine_labelIds.png"))
    assert {name for name, share in shares.items()} == {_NAME[i] for i in np.nonzero(counts)[0]}


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


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    a = syn.generate_city(tmp_path / "a", 3, 1, size=(64, 128), seed=11, progress=False, workers=0)
    b = syn.generate_city(tmp_path / "b", 3, 1, size=(64, 128), seed=11, progress=False, workers=2)
    c = syn.generate_city(tmp_path / "c", 3, 1, size=(64, 128), seed=12, progress=False, workers=0)
    names = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert len(names) == 4 * 9 + 1  # per frame: 2 views, 4 gtFine files, disparity, camera, normals; the meta file
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
    assert json.loads((root / _META_FILE).read_text())["seed"] == 1

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
    assert settings == json.loads((city.root / _META_FILE).read_text())
    assert settings["seed"] == SEED and settings["size"] == list(SIZE) and settings["frames"] == city.frames
    assert syn.is_generated_city(city.root)
    assert syn.city_settings(tmp_path) is None and not syn.is_generated_city(tmp_path)
    assert syn.city_settings(tmp_path / "missing") is None
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / _META_FILE).write_text('{"seed": 0, "size": [64')
    for call in (syn.city_settings, syn.is_generated_city):
        with pytest.raises(ValueError, match=_META_FILE):
            call(corrupt)
    (corrupt / _META_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        syn.city_settings(corrupt)
