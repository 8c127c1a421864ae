"""Training: YAML recipes and their stages, the LightningModule and the LightningDataModule.

    from mtdense.train import load_recipe, train
    recipe, text = load_recipe("cityscapes_mobilenet_v3_small", ["data.root=/data/cityscapes"])
    result = train(recipe, "runs/cs", recipe_text=text)

- :mod:`.config`: typed configs from YAML (``--set`` overrides, errors that name the key path);
- :mod:`.schema`: the recipe's fields, defaults and checks; :func:`load_recipe`;
- :mod:`.prepare`: the data a recipe trains on (generating the synthetic city, never over other files);
- :mod:`.runner`: the stages (:func:`train`); :mod:`.module` and :mod:`.datamodule`: the Lightning parts.

The Lightning parts are imported on first use, so reading a recipe stays light.
"""

from __future__ import annotations

from typing import Any

from mtdense.train.config import apply_overrides
from mtdense.train.schema import Recipe, RecipeError, load_recipe, recipe_from_dict, recipe_to_dict

__all__ = [
    "Recipe", "RecipeError", "StageResult", "TrainResult", "apply_overrides", "load_recipe", "recipe_from_dict",
    "recipe_to_dict", "train", "MultiTaskModule", "CityscapesDataModule",
]

_LAZY = {
    "train": "mtdense.train.runner", "StageResult": "mtdense.train.runner", "TrainResult": "mtdense.train.runner",
    "MultiTaskModule": "mtdense.train.module", "CityscapesDataModule": "mtdense.train.datamodule",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtdense.train' has no attribute {name!r}")
