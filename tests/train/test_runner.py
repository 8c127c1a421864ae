"""The stage driver and the train / evaluate commands on a tiny Cityscapes-layout tree."""

import json
import math

import cv2
import lightning as L
import numpy as np
import pytest
import torch
import yaml

from mtdense import load_model
from mtdense.cli import main
from mtdense.data.labels import TRAIN_CLASS_NAMES
from mtdense.train import load_recipe, recipe_from_dict, train
from mtdense.train.runner import write_run_config


class _StopAfterFirstEpoch(L.Callback):
    """Simulates an interrupted run: stops once the first epoch is checkpointed."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


class _RecordStart(L.Callback):
    def __init__(self):
        self.starts = []

    def on_fit_start(self, trainer, pl_module):
        self.starts.append({k: v.clone() for k, v in pl_module.model.state_dict().items()})


def test_two_stages_each_start_from_the_previous_weights(tiny_recipe, tmp_path, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    d["stages"].append({"name": "s1", "size": [32, 64], "scale": 0.5, "epochs": 1, "batch_size": 2, "lr": 1e-4})
    rec = _RecordStart()
    result = train(recipe_from_dict(d), tmp_path / "run", recipe_text=yaml.safe_dump(d), callbacks=[rec])
    s0, s1 = result.stages
    assert s0.dir.name == "stage0-s0" and s1.dir.name == "stage1-s1"
    assert s0.global_step == 2 and s1.global_step == 2
    for s in (s0, s1):
        assert s.last.is_file() and s.best is not None and s.best.is_file() and 0 <= s.best_score <= 1
        assert list((s.dir / "csv").rglob("metrics.csv")) and list((s.dir / "tensorboard").rglob("events.*"))
    stage0_last = {k[len("model."):]: v for k, v in torch.load(s0.last, weights_only=True)["state_dict"].items() if k.startswith("model.")}
    for k, v in stage0_last.items():
        torch.testing.assert_close(rec.starts[1][k], v, msg=k)
    hp = torch.load(s1.last, weights_only=True)["hyper_parameters"]
    assert hp["stage"]["train_size"] == [32, 64] and hp["stage"]["val_size"] == [32, 64]  # 64x128 * 0.5
    assert (tmp_path / "run" / "recipe.yaml").read_text() == yaml.safe_dump(d)
    assert recipe_from_dict(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())) == recipe_from_dict(d)
    assert load_model(tmp_path / "run" / "model.pth").config["decoder_channels"] == 16


def test_run_config_saves_recipe_as_given_and_resolved(tiny_recipe, tmp_path, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    text = yaml.safe_dump(d)
    r = recipe_from_dict(d)
    write_run_config(r, tmp_path, text, ["stages.0.epochs=1"])
    assert (tmp_path / "recipe.yaml").read_text() == text
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert recipe_from_dict(resolved) == r
    assert "stages.0.epochs=1" in (tmp_path / "config.yaml").read_text().splitlines()[0]


def test_run_folder_keeps_the_recipe_with_its_overrides(tiny_recipe, tmp_path, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    d["data"]["root"] = None  # as in the packaged recipes
    path = tmp_path / "given.yaml"
    path.write_text("# the data root comes from --set\n" + yaml.safe_dump(d, sort_keys=False))
    overrides = [f"data.root={tiny_cityscapes}", "stages.0.epochs=2"]
    recipe, text = load_recipe(path, overrides)
    write_run_config(recipe, tmp_path / "run", text, overrides)
    saved, _ = load_recipe(tmp_path / "run" / "recipe.yaml")  # validates, data root included
    assert saved == recipe and saved.data.root == str(tiny_cityscapes) and saved.stages[0].epochs == 2
    assert not list((tmp_path / "run").glob(".*"))  # written atomically: no temporary file left


def test_last_checkpoint_holds_the_final_epoch_when_validation_is_sparse(tiny_recipe, tmp_path, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes, epochs=3)
    d["trainer"]["check_val_every_n_epoch"] = 2  # validates after epoch 2 only, not after the last (3rd)
    result = train(recipe_from_dict(d), tmp_path / "run")
    stage = result.stages[0]
    last = torch.load(stage.last, weights_only=True)
    # 3 epochs of 2 steps: last.ckpt after step 6, the best (only validated) one after step 4
    assert last["global_step"] == 6 == stage.global_step
    assert torch.load(stage.best, weights_only=True)["global_step"] == 4 and stage.best_score is not None
    final = load_model(tmp_path / "run" / "model.pth").state_dict()
    for k, v in final.items():
        torch.testing.assert_close(v, last["state_dict"][f"model.{k}"], msg=k)


def test_resume_continues_from_the_last_checkpoint(tiny_recipe, tmp_path, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes, epochs=2)
    recipe = recipe_from_dict(d)
    first = train(recipe, tmp_path / "run", callbacks=[_StopAfterFirstEpoch()])
    last = first.stages[0].last
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2  # one epoch of 2 steps
    result = train(recipe, tmp_path / "run", resume=last)
    ckpt = torch.load(result.stages[0].last, weights_only=True)
    assert result.stages[0].global_step == 4 and ckpt["global_step"] == 4 and ckpt["epoch"] >= 1
    # The schedule carried on too: one cycle over the 4 steps of the stage, ended at its floor.
    sched = ckpt["lr_schedulers"][0]
    assert sched["total_steps"] == 4 and sched["last_epoch"] == 4


def test_resume_refuses_a_checkpoint_of_another_recipe(tiny_recipe, tmp_path, tiny_cityscapes):
    recipe = recipe_from_dict(tiny_recipe(tiny_cityscapes))
    result = train(recipe, tmp_path / "run")
    other = tiny_recipe(tiny_cityscapes)
    other["stages"][0]["name"] = "other"
    with pytest.raises(ValueError, match="resume with the recipe that wrote it"):
        train(recipe_from_dict(other), tmp_path / "run2", resume=result.stages[0].last)


def test_ddp_two_processes_on_cpu(tiny_recipe, tmp_path, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    d["trainer"].update(devices=2, strategy="ddp_spawn", limit_train_batches=None)
    result = train(recipe_from_dict(d), tmp_path / "run")
    ckpt = torch.load(result.stages[0].last, weights_only=True)
    # 8 frames, batch 2 per process: 2 steps per epoch on 2 processes (one process would take 4).
    assert ckpt["global_step"] == 2 and result.stages[0].global_step == 2
    assert (tmp_path / "run" / "model.pth").is_file()


def test_train_and_evaluate_commands(tiny_recipe, tmp_path, tiny_cityscapes, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_recipe(tiny_cityscapes)))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--set", "stages.0.lr=1e-3", "--precision", "32"]) == 0
    assert "final model" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"][0]["lr"] == 1e-3
    saved, _ = load_recipe(run / "recipe.yaml")  # the recipe as trained, overrides and all
    assert saved.stages[0].lr == 1e-3 and saved.trainer.precision == "32"
    out = tmp_path / "eval"
    ckpt = run / "stage0-s0" / "checkpoints" / "last.ckpt"
    assert main(["evaluate", str(ckpt), "--data", str(tiny_cityscapes), "--out", str(out), "--save-predictions",
                 "--size", "64", "128", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "abs_rel" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "pixel_acc", "abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"):
        assert key in metrics
    assert list(metrics["per_class_iou"]) == TRAIN_CLASS_NAMES and metrics["num_images"] == 4
    labels = sorted((out / "predictions" / "labelIds").glob("*_pred_labelIds.png"))
    depths = sorted((out / "predictions" / "depth").glob("*_pred_depth.png"))
    assert len(labels) == len(depths) == 4
    lab = cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED)
    dep = cv2.imread(str(depths[0]), cv2.IMREAD_UNCHANGED)
    assert lab.shape == dep.shape == (64, 128) and lab.dtype == np.uint8 and dep.dtype == np.uint16
    assert set(np.unique(lab)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}

    # The saved label-id PNGs, scored by the official script, give metrics.json's mIoU.
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    gts = sorted(str(p) for p in (tiny_cityscapes / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    preds = [str(out / "predictions" / "labelIds" / (p.split("/")[-1].replace("_gtFine_labelIds", "_pred_labelIds"))) for p in gts]
    saved = dict(vars(ev.args))
    try:
        ev.args.quiet, ev.args.JSONOutput, ev.args.evalInstLevelScore = True, False, False
        official = ev.evaluateImgLists(preds, gts, ev.args)
    finally:
        vars(ev.args).clear()
        vars(ev.args).update(saved)
    assert metrics["miou"] == pytest.approx(official["averageScoreClasses"], rel=1e-9)
    for name, iou in official["classScores"].items():
        if name in metrics["per_class_iou"]:
            mine = metrics["per_class_iou"][name]
            assert (mine is None and math.isnan(iou)) or mine == pytest.approx(iou, rel=1e-9), name


def test_evaluate_without_out_refuses_save_predictions(tmp_path, tiny_cityscapes, capsys):
    from mtdense import create_model, save_checkpoint

    ckpt = save_checkpoint(create_model(decoder_channels=16), tmp_path / "m.pth")
    assert main(["evaluate", str(ckpt), "--data", str(tiny_cityscapes), "--save-predictions"]) == 2
    assert "--out" in capsys.readouterr().err


def test_enet_class_weights_are_counted_on_the_train_split_and_saved(tiny_recipe, tmp_path, tiny_cityscapes):
    from mtdense.data.cityscapes import class_pixel_counts
    from mtdense.losses import enet_class_weights

    d = tiny_recipe(tiny_cityscapes)
    d.setdefault("loss", {})["class_weights"] = "enet"
    d["stages"][0]["zoom_depth"] = True
    result = train(recipe_from_dict(d), tmp_path / "run")
    hp = torch.load(result.stages[0].last, weights_only=True)["hyper_parameters"]
    expected = enet_class_weights(class_pixel_counts(tiny_cityscapes, "train"))
    np.testing.assert_allclose(hp["loss_config"]["class_weights"], expected.numpy(), rtol=1e-5)
    road, car = TRAIN_CLASS_NAMES.index("road"), TRAIN_CLASS_NAMES.index("car")
    assert hp["loss_config"]["class_weights"][car] > hp["loss_config"]["class_weights"][road]  # the car is rarer
