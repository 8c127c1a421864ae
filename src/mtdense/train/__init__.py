"""Training: YAML recipes and their stages, the LightningModule and the LightningDataModule.

    from mtdense.train import load_recipe, train
    recipe, text = load_recipe("cityscapes_mobilenet_v3_small", ["data.root=/data/cityscapes"])
    result = train(recipe, "runs/cs", recipe_text=text)

The Lightning parts are imported on first use, so reading a recipe stays light.
"""

from __future__ import annotations

from typing import Any

from mtdense.train.recipes import (
    Recipe,
    RecipeError,
    StageResult,
    TrainResult,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    train,
)

__all__ = [
    "Recipe", "RecipeError", "StageResult", "TrainResult", "apply_overrides", "load_recipe", "recipe_from_dict",
    "recipe_to_dict", "train", "MultiTaskModule", "CityscapesDataModule",
]


def __getattr__(name: str) -> Any:
    if name == "MultiTaskModule":
        from mtdense.train.module import MultiTaskModule

        return MultiTaskModule
    if name == "CityscapesDataModule":
        from mtdense.train.datamodule import CityscapesDataModule

        return CityscapesDataModule
    raise AttributeError(f"module 'mtdense.train' has no attribute {name!r}")
