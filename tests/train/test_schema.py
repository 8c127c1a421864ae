"""Recipes are validated before training: keys by path, values, the data root."""

import pytest
import yaml

from mtdense.cli import main
from mtdense.train.schema import (
    DataConfig,
    LossConfig,
    OptimizerConfig,
    RecipeError,
    StageConfig,
    load_recipe,
    packaged_configs,
    recipe_from_dict,
    recipe_to_dict,
)


@pytest.mark.parametrize("name", ["cityscapes_mobilenet_v3_small", "synthetic_demo", "kitti_mobilenet_v3_small",
                                  "nyuv2_mobilenet_v3_small"])
def test_packaged_recipes_are_valid(name):
    assert name in packaged_configs()
    recipe, text = load_recipe(name, check_paths=False)
    assert text.strip() and recipe.stages


def test_cityscapes_recipe_holds_the_recipes_numbers():
    r, _ = load_recipe("cityscapes_mobilenet_v3_small", check_paths=False)
    assert r.model.encoder == "mobilenet_v3_small" and r.model.pretrained is True and r.model.decoder_channels == 256
    assert r.loss.depth == "mse" and r.loss.weighting == "fixed" and r.data.crop_bottom == 0.2
    quarter, half, full = r.stages
    assert (quarter.size, quarter.epochs, quarter.batch_size, quarter.lr) == ([200, 512], 150, 16, 5e-4)
    assert (half.epochs, half.lr, full.epochs, full.lr) == (25, 5e-6, 25, 5e-6)
    assert quarter.batch_size > half.batch_size > full.batch_size


def test_nyuv2_recipe_holds_its_numbers():
    r, _ = load_recipe("nyuv2_mobilenet_v3_small", check_paths=False)
    assert r.data.format == "nyuv2" and r.data.splits() == ("train", "val")
    assert r.model.tasks == {"seg": 13, "depth": 1, "normals": 3} and r.model.pretrained is True
    assert (r.loss.depth, r.loss.normals, r.loss.weighting) == ("l1", "cosine", "fixed")
    (stage,) = r.stages
    assert (stage.size, stage.scale, stage.epochs, stage.batch_size, stage.zoom_depth) == ([288, 384], 1.0, 200, 8, True)


def test_valid_recipe_fills_defaults(tiny_recipe, tiny_cityscapes):
    r = recipe_from_dict(tiny_recipe(tiny_cityscapes))
    assert r.loss.depth == "mse" and r.optimizer.name == "adam" and r.stages[0].crop_scale == [0.5, 1.0]
    assert recipe_from_dict(recipe_to_dict(r)) == r


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["stages"].append({**d["stages"][0], "name": "s1", "epochz": 3}), r"stages\[1\]\.epochz"),
        (lambda d: d["model"].update(encodr="x"), r"model\.encodr"),
        (lambda d: d.update(optimiser={}), r"'optimiser'"),
        (lambda d: d["stages"][0].update(epochs=-1), r"stages\[0\]\.epochs: must be >= 1, got -1"),
        (lambda d: d["stages"][0].update(lr="fast"), r"stages\[0\]\.lr: expected a number"),
        (lambda d: d["stages"][0].pop("batch_size"), r"missing key 'stages\[0\]\.batch_size'"),
        (lambda d: d["stages"][0].update(size=None), r"stages\[0\]: give the training resolution"),
        (lambda d: d["loss"].update(depth="huber") if "loss" in d else d.update(loss={"depth": "huber"}), r"loss\.depth"),
        (lambda d: d["data"].update(crop_bottom=1.5), r"data\.crop_bottom"),
        (lambda d: d["trainer"].update(precision="8"), r"trainer\.precision"),
        (lambda d: d.setdefault("loss", {}).update(class_weights="inverse"), r"loss\.class_weights: unknown class weighting"),
        (lambda d: d["stages"][0].update(zoom_depth="yes"), r"stages\[0\]\.zoom_depth: expected true or false"),
        (lambda d: d["trainer"].update(channels_last=1), r"trainer\.channels_last: expected true or false"),
        (lambda d: d["data"].update(color_jitter=[0.3, 0.3, 0.3]), r"data\.color_jitter: must be"),
        (lambda d: d["model"].update(pretrained=1), r"model\.pretrained: expected true or false or a string, got 1"),
        (lambda d: d["trainer"].update(devices=0), r"trainer\.devices: must be >= 1, got 0"),
        (lambda d: d["trainer"].update(limit_val_batches=0.0), r"trainer\.limit_val_batches: must be > 0"),
        (lambda d: d["data"].update(generate={"size": [64]}), r"data\.generate\.size: must be \[H, W\]"),
        (lambda d: d["stages"].append(dict(d["stages"][0])), r"stages: stage names must differ"),
        (lambda d: d.update(stages=[]), r"stages: must have at least 1"),
        (lambda d: d.update(loss={"class_weights": [1.0] * 3}), r"loss\.class_weights: 3 weights for the 19 classes"),
        (lambda d: d.update(loss={"weights": {"normals": 1.0}}), r"loss\.weights: weights for tasks \['normals'\]"),
        (lambda d: d["model"].update(tasks={"seg": 19}, depth_init_m=20.0), r"model\.depth_init_m: needs a depth task"),
        (lambda d: d["optimizer"].update(betas=[0.9]) if "optimizer" in d else d.update(optimizer={"betas": [0.9]}),
         r"optimizer\.betas: must be two numbers"),
        (lambda d: d["model"].update(tasks={"seg": 19, "normals": 1}),
         r"model\.tasks\.normals: has 3 output channels, got 1; --set model\.tasks\.normals=3"),
        (lambda d: d["model"].update(tasks={"seg": 19, "depth": 2}), r"model\.tasks\.depth: has 1 output channels, got 2"),
        (lambda d: d.update(loss={"normals": "angle"}), r"loss\.normals: unknown normals loss 'angle'; valid: cosine, l1"),
    ],
)
def test_bad_recipes_name_the_key(tiny_recipe, tiny_cityscapes, edit, message):
    d = tiny_recipe(tiny_cityscapes)
    edit(d)
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(d)


def test_one_task_recipe_and_class_weights_given_as_numbers(tiny_recipe, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    d["model"]["tasks"] = {"seg": 19}
    d["loss"] = {"class_weights": [1.0] * 19}
    r = recipe_from_dict(d)
    assert r.loss.weights == {} and r.loss.class_weights == [1.0] * 19


def test_sections_hold_the_recipe_defaults():
    # The defaults that MultiTaskModule, CityscapesDataModule and the loss fall back to.
    assert OptimizerConfig().model_dump() == {"name": "adam", "weight_decay": 0.0, "betas": [0.9, 0.999], "pct_start": 0.3,
                                              "div_factor": 25.0, "final_div_factor": 1e4}
    assert LossConfig().model_dump() == {"depth": "mse", "normals": "cosine", "weighting": "fixed", "weights": {},
                                         "dwa_temperature": 2.0, "class_weights": None}
    data = DataConfig()
    assert (data.num_workers, data.depth_source, data.color_jitter) == (4, "disparity", [0.3, 0.3, 0.3, 0.05])
    assert StageConfig(name="s", epochs=1, batch_size=1, lr=1.0, scale=0.5).crop_scale == [0.5, 1.0]


def test_missing_or_unset_root_is_refused(tiny_recipe, tmp_path):
    d = tiny_recipe(tmp_path / "nowhere")
    with pytest.raises(RecipeError, match=r"data\.root: dataset root .*nowhere.* does not exist"):
        recipe_from_dict(d)
    d["data"]["root"] = None
    with pytest.raises(RecipeError, match=r"data\.root: not set"):
        recipe_from_dict(d)
    d["data"]["root"] = str(tmp_path)
    with pytest.raises(RecipeError, match="no leftImg8bit"):
        recipe_from_dict(d)


def test_cli_refuses_bad_recipe_before_training(tiny_recipe, tmp_path, tiny_cityscapes, capsys):
    d = tiny_recipe(tiny_cityscapes)
    d["stages"][0]["epochs"] = -2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stages[0].epochs: must be >= 1, got -2" in err and "bad.yaml" in err
    assert not out.exists()
    assert main(["train", str(path), "--out", str(out), "--set", "stages.0.epochs=1", "data.root=/does/not/exist"]) == 2
    assert "data.root" in capsys.readouterr().err and not out.exists()
