"""Recipes on other dataset formats: data.format, classes taken from the dataset."""

from __future__ import annotations

import pytest
import torch

from mtdense.train.datamodule import CityscapesDataModule
from mtdense.train.runner import fit_to_dataset
from mtdense.train.schema import RecipeError, recipe_from_dict

FOLDER_CLASSES = ["floor", "wall", "person", "chair", "table"]  # as tests/train/conftest.py writes them


def folder_recipe(tiny_recipe, root, **model):
    data = tiny_recipe(root, size=[64, 96])
    data["data"]["format"] = "folder"
    data["model"].update(model)
    return data


def test_unknown_formats_are_refused(tiny_recipe, tiny_folder):
    data = folder_recipe(tiny_recipe, tiny_folder)
    data["data"]["format"] = "coco"
    with pytest.raises(RecipeError, match=r"data\.format.*unknown dataset format 'coco'"):
        recipe_from_dict(data)


def test_folder_root_needs_dataset_yaml(tiny_recipe, tiny_cityscapes):
    data = tiny_recipe(tiny_cityscapes)
    data["data"]["format"] = "folder"
    with pytest.raises(RecipeError, match="has no dataset.yaml"):
        recipe_from_dict(data)


def test_kitti_root_needs_a_kitti_folder(tiny_recipe, tiny_folder, tmp_path):
    data = folder_recipe(tiny_recipe, tiny_folder)
    data["data"]["format"] = "kitti"
    with pytest.raises(RecipeError, match=r"data\.root: .* has none of raw/, data_depth_annotated/, data_semantics/"):
        recipe_from_dict(data)
    (tmp_path / "data_semantics").mkdir()
    data["data"]["root"] = str(tmp_path)
    recipe = recipe_from_dict(data)
    assert recipe.data.splits() == ("train+semantics_train", "val+semantics_val")
    data["data"].update(train_split="train", val_split="val")
    assert recipe_from_dict(data).data.splits() == ("train", "val")


def test_other_formats_keep_their_train_and_val_splits(tiny_recipe, tiny_folder):
    assert recipe_from_dict(folder_recipe(tiny_recipe, tiny_folder)).data.splits() == ("train", "val")


def test_default_tasks_take_the_dataset_classes(tiny_recipe, tiny_folder):
    recipe, info = fit_to_dataset(recipe_from_dict(folder_recipe(tiny_recipe, tiny_folder)))
    assert recipe.model.tasks == {"seg": 5, "depth": 1}
    assert list(info.classes) == FOLDER_CLASSES and info.tasks == ("seg", "depth")
    same, _ = fit_to_dataset(recipe_from_dict(folder_recipe(tiny_recipe, tiny_folder, tasks={"seg": 5})))
    assert same.model.tasks == {"seg": 5}


def test_another_class_count_is_an_error_naming_both(tiny_recipe, tiny_folder):
    recipe = recipe_from_dict(folder_recipe(tiny_recipe, tiny_folder, tasks={"seg": 7, "depth": 1}))
    with pytest.raises(RecipeError, match=r"model\.tasks\.seg: 7 classes, but the dataset .* has 5 \(floor, wall"):
        fit_to_dataset(recipe)


def test_cityscapes_recipe_is_unchanged(tiny_recipe, tiny_cityscapes):
    recipe = recipe_from_dict(tiny_recipe(tiny_cityscapes))
    fitted, info = fit_to_dataset(recipe)
    assert fitted is recipe and info.format == "cityscapes" and info.num_classes == 19


def test_cityscapes_root_without_normals_refuses_a_normals_task(tiny_recipe, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    d["model"]["tasks"] = {"seg": 19, "depth": 1, "normals": 3}
    with pytest.raises(RecipeError, match=r"model\.tasks: normals has no labels in .* \(it has seg, depth\); leave "
                                          r"normals out of model\.tasks; normals come with the synthetic city"):
        fit_to_dataset(recipe_from_dict(d))


def test_folder_batches_hold_the_dataset_classes(tiny_folder):
    dm = CityscapesDataModule(tiny_folder, batch_size=2, train_size=(64, 96), format="folder", num_classes=5,
                              num_workers=0, tasks=["seg", "depth"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 96) and batch["seg"].shape == (2, 64, 96)
    seg = batch["seg"]
    assert bool(((seg < 5) | (seg == 255)).all()) and bool((seg < 5).any())
    val = next(iter(dm.val_dataloader()))
    assert set(torch.unique(val["seg"]).tolist()) <= set(range(5))
    assert float(val["depth"].min()) >= 2.0
    assert len(dm.train_set) == 4  # the frame without labels trains too


def test_checkpoints_carry_the_dataset_description(tiny_recipe, tiny_folder, tmp_path):
    from mtdense import load_model
    from mtdense.data.description import DatasetInfo, model_dataset_info
    from mtdense.models import create_model, save_checkpoint
    from mtdense.models.weights import read_checkpoint
    from mtdense.train.runner import train

    result = train(recipe_from_dict(folder_recipe(tiny_recipe, tiny_folder)), tmp_path / "run")
    hp = read_checkpoint(result.final)["hyper_parameters"]
    assert hp["dataset_info"]["classes"] == FOLDER_CLASSES
    for path in (result.final, tmp_path / "run" / "model.pth"):
        model = load_model(path)
        assert model.tasks == {"seg": 5, "depth": 1}
        info = model_dataset_info(model)
        assert list(info.classes) == FOLDER_CLASSES and info.format == "folder"
        assert info.colors[0] == (200, 30, 30)
    # a saved model keeps it, safetensors included; a model saved without one reads as Cityscapes
    save_checkpoint(model, tmp_path / "again.pth")
    save_checkpoint(model, tmp_path / "again.safetensors")
    for name in ("again.pth", "again.safetensors"):
        assert model_dataset_info(load_model(tmp_path / name)) == info
    old = create_model("mobilenet_v3_small", decoder_channels=16)
    save_checkpoint(old, tmp_path / "old.pth")
    loaded = load_model(tmp_path / "old.pth")
    assert loaded.dataset_info is None and model_dataset_info(loaded) == DatasetInfo.cityscapes()
