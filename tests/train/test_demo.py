"""The demo pipeline end to end at toy size: generate, train, evaluate, report; reuse the data."""

import json

from mtdense.cli import main

TOY = [
    "data.generate.n_train=4", "data.generate.n_val=2", "data.generate.size=[64,128]", "data.num_workers=0",
    "model.decoder_channels=16", "stages=[{name: toy, size: [64, 128], epochs: 1, batch_size: 2, lr: 1.0e-3}]",
    "trainer.limit_train_batches=2",
]


def test_demo_generates_trains_evaluates_and_reuses_the_data(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pictures", "2", "--set", *TOY]) == 0
    printed = capsys.readouterr().out
    assert "val mIoU" in printed and "AbsRel" in printed and "wall time" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["miou"] <= 1 and metrics["abs_rel"] > 0 and metrics["num_images"] == 2 and metrics["wall_s"] > 0
    assert len(list((out / "pictures").glob("*.png"))) == 2
    report = (out / "report.md").read_text()
    assert "mIoU" in report and "val split" in report and "pictures/" in report
    assert (out / "train" / "model.pth").is_file() and (out / "train" / "config.yaml").is_file()

    # Same settings: the city is not generated again.
    meta = out / "data" / "mtdense_synthetic.json"
    frame = next((out / "data" / "leftImg8bit" / "train").rglob("*.png"))
    stamps = meta.stat().st_mtime_ns, frame.stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--pictures", "1", "--set", *TOY]) == 0
    assert (meta.stat().st_mtime_ns, frame.stat().st_mtime_ns) == stamps


def test_demo_trains_the_three_task_model_on_the_city(tmp_path, capsys):
    import shutil

    import cv2

    from mtdense import load_model

    out = tmp_path / "demo3"
    assert main(["demo", "--out", str(out), "--pictures", "1", "--tasks", "seg,depth,normals", "--set", *TOY]) == 0
    printed = capsys.readouterr().out
    assert "val mIoU" in printed and "AbsRel" in printed and "deg mean" in printed and "normals:" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["normal_mean"] < 180 and 0 <= metrics["normal_11_25"] <= metrics["normal_30"] <= 1
    assert load_model(out / "train" / "model.pth").tasks == {"seg": 19, "depth": 1, "normals": 3}
    config = (out / "train" / "config.yaml").read_text()
    assert "normals: 3" in config and "normals: 1.0" in config  # the head, and its loss weight
    report = (out / "report.md").read_text()
    assert "cosine normals" in report and "ground-truth normals" in report
    (picture,) = (out / "pictures").glob("*.png")
    assert cv2.imread(str(picture)) is not None
    # a city generated before normals were written: the fix is named
    shutil.rmtree(out / "data" / "normals")
    assert main(["demo", "--out", str(out), "--tasks", "seg,depth,normals", "--set", *TOY]) == 2
    assert "normals has no labels" in capsys.readouterr().err


def test_demo_tasks_are_checked_and_turn_off_what_a_task_needs():
    from mtdense.demo import task_overrides
    from mtdense.train.schema import load_recipe

    recipe, _ = load_recipe("synthetic_demo", check_paths=False)
    assert task_overrides(recipe, ["normals", "seg", "depth"]) == [
        "model.tasks={seg: 19, depth: 1, normals: 3}", "loss.weights={seg: 1, depth: 12, normals: 1}"]
    assert task_overrides(recipe, ["depth", "normals"]) == [
        "model.tasks={depth: 1, normals: 3}", "loss.weights={depth: 12, normals: 1}", "loss.class_weights=null"]
    assert task_overrides(recipe, ["seg", "normals"])[-1] == "model.depth_init_m=null"
    recipe_3, _ = load_recipe("synthetic_demo", task_overrides(recipe, ["seg", "depth", "normals"]), check_paths=False)
    assert recipe_3.model.tasks == {"seg": 19, "depth": 1, "normals": 3}


def test_bad_demo_tasks_are_refused(tmp_path, capsys):
    import pytest

    for value, shown in (("seg,edges", "unknown: edges"), ("seg,seg", "each once"), (",", "one or more")):
        with pytest.raises(SystemExit) as exit_:
            main(["demo", "--out", str(tmp_path / "d"), "--tasks", value])
        assert exit_.value.code == 2
        assert shown in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
