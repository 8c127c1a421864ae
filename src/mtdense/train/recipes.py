"""The recipe API under its former module name, for code that still imports it from here.

New code imports from :mod:`mtdense.train` (or :mod:`.schema`, :mod:`.config`, :mod:`.prepare`,
:mod:`.runner`).
"""

from mtdense.train.config import apply_overrides
from mtdense.train.prepare import prepare_data
from mtdense.train.runner import StageResult, TrainResult, stage_dir, stage_sizes, train, write_run_config
from mtdense.train.schema import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    Recipe,
    RecipeError,
    StageConfig,
    SyntheticDataConfig,
    TrainerConfig,
    load_recipe,
    packaged_configs,
    recipe_from_dict,
    recipe_to_dict,
    resolve_config_path,
    validate_paths,
)

__all__ = [
    "RecipeError", "SyntheticDataConfig", "DataConfig", "ModelConfig", "LossConfig", "OptimizerConfig", "StageConfig",
    "TrainerConfig", "Recipe", "load_recipe", "recipe_from_dict", "apply_overrides", "recipe_to_dict",
    "validate_paths", "resolve_config_path", "packaged_configs", "StageResult", "TrainResult", "stage_dir",
    "stage_sizes", "write_run_config", "prepare_data", "train",
]
