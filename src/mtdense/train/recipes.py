"""Training recipes: YAML files validated into dataclasses before any training starts.

A recipe names the data, the model, the loss, the optimiser, a list of stages (each a
resolution with its own epochs, batch size and one-cycle learning rate, starting from the
previous stage's weights) and the Lightning trainer settings::

    recipe = load_recipe("configs/synthetic_demo.yaml", overrides=["stages.0.epochs=2", "data.root=/data/cs"])

Every key is checked: an unknown key, a wrong type or an impossible value (negative epochs,
a missing dataset root) raises :class:`RecipeError` naming the key by its path, e.g.
``stages[1].epochz``. Overrides are ``dotted.key=value`` with the value parsed as YAML
(``stages.0.size=[200,512]``, ``model.pretrained=false``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtdense.losses import DEPTH_LOSSES, WEIGHTINGS

__all__ = [
    "RecipeError", "SyntheticDataConfig", "DataConfig", "ModelConfig", "LossConfig", "OptimizerConfig", "StageConfig",
    "TrainerConfig", "Recipe", "load_recipe", "recipe_from_dict", "apply_overrides", "recipe_to_dict",
    "validate_paths", "resolve_config_path", "packaged_configs",
]

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class RecipeError(ValueError):
    """A recipe that cannot be trained; the message names the key path and the fix."""


@dataclass
class SyntheticDataConfig:
    """How to generate the synthetic city into ``data.root`` (demo only).

    Attributes:
        n_train: Training frames.
        n_val: Validation frames (never used for training).
        size: Frame size ``[H, W]`` in pixels.
        seed: Generator seed (the same seed gives the same city).
    """

    n_train: int = 400
    n_val: int = 100
    size: list[int] = field(default_factory=lambda: [128, 256])
    seed: int = 0


@dataclass
class DataConfig:
    """Where the Cityscapes-layout data is and how it is read.

    Attributes:
        root: Dataset root holding ``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/``.
        depth_source: Depth ground truth: ``"disparity"`` (the shipped SGBM maps) or a teacher
            name known to :class:`mtdense.data.cityscapes.CityscapesDataset`.
        clean_disparity: Clean the SGBM disparity (border crop, median, inpainting).
        crop_bottom: Fraction of image height removed at the bottom (ego vehicle), 0..<1.
        num_workers: DataLoader worker processes.
        val_size: ``[H, W]`` the validation images are resized to during training; ``None``:
            the stage's training size (``size``), or the native size scaled by ``scale``.
        generate: Generate the synthetic city into ``root`` first (``mtdense demo``).
        color_jitter: Training colour jitter ``[brightness, contrast, saturation, hue]`` as in
            ``torchvision.transforms.v2.ColorJitter``; hue costs as much as the rest of the
            loading on a CPU (0 skips it).
        cache_in_memory: Keep decoded frames in memory after the first epoch (later epochs only
            augment); for splits that fit in RAM, about ``H * W * 8`` bytes a frame.
    """

    root: str | None = None
    depth_source: str = "disparity"
    clean_disparity: bool = False
    crop_bottom: float = 0.0
    num_workers: int = 4
    val_size: list[int] | None = None
    generate: SyntheticDataConfig | None = None
    color_jitter: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.3, 0.05])
    cache_in_memory: bool = False


@dataclass
class ModelConfig:
    """The network (arguments of :func:`mtdense.create_model`).

    Attributes:
        encoder: Encoder name (``mobilenet_v3_small``, ...).
        decoder_channels: Light-Weight RefineNet width (256 in the recipe).
        pretrained: ``true`` (ImageNet weights), ``false`` (random init) or a local weights path.
        freeze_encoder: Keep the encoder fixed.
        tasks: Task -> output channels.
        depth_init_m: A fresh depth head first predicts this depth (metres) everywhere (its
            output bias starts at the encoded value); ``null``: default initialisation.
        bn_momentum: BatchNorm running-statistics momentum while training (torchvision's
            MobileNetV3 uses 0.01; 0.1 suits short runs from random init); ``null``: keep it.
    """

    encoder: str = "mobilenet_v3_small"
    decoder_channels: int = 256
    pretrained: bool | str = True
    freeze_encoder: bool = False
    tasks: dict[str, int] = field(default_factory=lambda: {"seg": 19, "depth": 1})
    depth_init_m: float | None = None
    bn_momentum: float | None = None


@dataclass
class LossConfig:
    """The loss (arguments of :class:`mtdense.losses.MultiTaskLoss`).

    Attributes:
        depth: Depth loss: ``mse`` (recipe), ``l1``, ``berhu``, ``silog``.
        weighting: ``fixed`` (recipe, 1:1), ``uncertainty`` (Kendall 2018), ``dwa`` (Liu 2019).
        weights: Fixed task weights (``fixed`` only).
        dwa_temperature: DWA temperature ``T``.
        class_weights: Cross-entropy class weights: ``null`` (recipe, unweighted) or ``enet``
            (``1 / ln(1.02 + p_k)`` from the training split's class pixel shares, counted when
            training starts; the numbers are saved with the run).
    """

    depth: str = "mse"
    weighting: str = "fixed"
    weights: dict[str, float] = field(default_factory=lambda: {"seg": 1.0, "depth": 1.0})
    dwa_temperature: float = 2.0
    class_weights: str | None = None


@dataclass
class OptimizerConfig:
    """Adam with a one-cycle cosine schedule stepped every optimiser step.

    Attributes:
        name: ``adam`` (the recipe's optimiser).
        weight_decay: L2 penalty of Adam.
        betas: Adam ``(beta1, beta2)``.
        pct_start: Fraction of a stage's steps spent warming up to the stage's ``lr``.
        div_factor: Start lr = ``lr / div_factor``.
        final_div_factor: End lr = start lr / ``final_div_factor``.
    """

    name: Literal["adam"] = "adam"
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class StageConfig:
    """One training stage; each starts from the previous stage's final weights.

    Give the training crop as ``size`` (``[H, W]`` pixels) or as ``scale`` (fraction of the
    dataset's native frame size after ``crop_bottom``, rounded down to a multiple of 8), or both
    (then ``size`` is the crop and ``scale`` only sizes validation).

    Attributes:
        name: Stage name (run sub-folder).
        epochs: Epochs (>= 1).
        batch_size: Images per step and process.
        lr: Peak learning rate of the one-cycle cosine schedule.
        size: Training crop ``[H, W]``.
        scale: Resolution relative to the native frames, in ``(0, 1]``.
        crop_scale: Random-resized-crop area range ``[min, max]`` relative to the image.
        zoom_depth: Divide the depth target by each crop's magnification (image width / crop
            width), so that an enlarged crop, whose objects look nearer, is taught nearer
            depths; keeps apparent size and depth consistent for a monocular network.
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    size: list[int] | None = None
    scale: float | None = None
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])
    zoom_depth: bool = False


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` settings (see its documentation for each).

    Attributes:
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: Devices per node (int or ``auto``).
        num_nodes: Machines.
        strategy: ``auto``, ``ddp``, ``ddp_spawn``, ...
        precision: ``32``, ``16-mixed`` or ``bf16-mixed``.
        seed: Seed of every process (``lightning.seed_everything``).
        log_every_n_steps: Logging interval.
        limit_train_batches: Batches per epoch (int) or fraction; ``None`` = all (tests/smoke runs).
        limit_val_batches: As above for validation.
        check_val_every_n_epoch: Validation interval in epochs.
        deterministic: Deterministic algorithms.
        progress_bar: Show Lightning's progress bar.
        channels_last: Train in NHWC memory format (about 2x faster steps for MobileNet on a
            CPU, and the layout tensor cores prefer under mixed precision).
    """

    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32"
    seed: int = 0
    log_every_n_steps: int = 10
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    check_val_every_n_epoch: int = 1
    deterministic: bool = False
    progress_bar: bool = True
    channels_last: bool = True


@dataclass
class Recipe:
    """A whole training recipe. Build with :func:`load_recipe` or :func:`recipe_from_dict`."""

    stages: list[StageConfig]
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    name: str = "mtdense"


# -- parsing --------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return "null" if tp is type(None) else tp.__name__


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float, nested dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path)
            except RecipeError as exc:
                # A mapping for a section, or a list for a list: its own, more precise error.
                if (isinstance(value, dict) and dataclasses.is_dataclass(arg)) or (
                    isinstance(value, (list, tuple)) and typing.get_origin(arg) is list
                ):
                    raise exc
        raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is not None:
            raise RecipeError(f"{path}: expected null, got {value!r}")
        return None
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise RecipeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _dataclass_from(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, f"{path} key"): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; YAML 1.2 and people read a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"recipe field {path}: unsupported annotation {tp!r}")


def _dataclass_from(cls: type, data: Any, path: str) -> Any:
    where = path or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        full = f"{path}.{key}" if path else str(key)
        raise RecipeError(f"unknown key {full!r}; valid keys under {where}: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing key {sub!r} (required under {where})")
    return cls(**kwargs)


def _check_values(recipe: Recipe) -> None:
    """Value checks that types cannot express; raises :class:`RecipeError` naming the key."""
    def fail(path: str, msg: str) -> None:
        raise RecipeError(f"{path}: {msg}")

    d = recipe.data
    if not 0.0 <= d.crop_bottom < 1.0:
        fail("data.crop_bottom", f"must be in [0, 1), got {d.crop_bottom}")
    if d.num_workers < 0:
        fail("data.num_workers", f"must be >= 0, got {d.num_workers}")
    if d.val_size is not None and (len(d.val_size) != 2 or min(d.val_size) < 32):
        fail("data.val_size", f"must be [H, W] with H, W >= 32, got {d.val_size}")
    if d.generate is not None:
        g = d.generate
        for key in ("n_train", "n_val"):
            if getattr(g, key) < 1:
                fail(f"data.generate.{key}", f"must be >= 1, got {getattr(g, key)}")
        if len(g.size) != 2 or min(g.size) < 32:
            fail("data.generate.size", f"must be [H, W] with H, W >= 32, got {g.size}")
    m = recipe.model
    if m.decoder_channels < 1:
        fail("model.decoder_channels", f"must be >= 1, got {m.decoder_channels}")
    if m.depth_init_m is not None and not (m.depth_init_m > 0 and "depth" in m.tasks):
        fail("model.depth_init_m", f"must be a depth > 0 m with a depth task, or null; got {m.depth_init_m}")
    if m.bn_momentum is not None and not 0 < m.bn_momentum <= 1:
        fail("model.bn_momentum", f"must be in (0, 1] or null, got {m.bn_momentum}")
    for task, c in m.tasks.items():
        if c < 1:
            fail(f"model.tasks.{task}", f"output channels must be >= 1, got {c}")
    loss = recipe.loss
    if loss.depth not in DEPTH_LOSSES:
        fail("loss.depth", f"unknown depth loss {loss.depth!r}; valid: {', '.join(DEPTH_LOSSES)}")
    if loss.weighting not in WEIGHTINGS:
        fail("loss.weighting", f"unknown weighting {loss.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    unknown_tasks = set(loss.weights) - set(m.tasks)
    if unknown_tasks:
        fail("loss.weights", f"weights for tasks {sorted(unknown_tasks)} that model.tasks ({sorted(m.tasks)}) lacks")
    for task, w in loss.weights.items():
        if w < 0:
            fail(f"loss.weights.{task}", f"must be >= 0, got {w}")
    if not loss.dwa_temperature > 0:
        fail("loss.dwa_temperature", f"must be > 0, got {loss.dwa_temperature}")
    cj = recipe.data.color_jitter
    if len(cj) != 4 or any(v < 0 for v in cj) or cj[3] > 0.5:
        fail("data.color_jitter", f"must be [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, got {cj}")
    if loss.class_weights not in (None, "enet"):
        fail("loss.class_weights", f"unknown class weighting {loss.class_weights!r}; valid: null, enet")
    if loss.class_weights is not None and "seg" not in m.tasks:
        fail("loss.class_weights", "class weights need a seg task in model.tasks")
    o = recipe.optimizer
    if o.weight_decay < 0:
        fail("optimizer.weight_decay", f"must be >= 0, got {o.weight_decay}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        fail("optimizer.betas", f"must be two numbers in [0, 1), got {o.betas}")
    if not 0 < o.pct_start < 1:
        fail("optimizer.pct_start", f"must be in (0, 1), got {o.pct_start}")
    for key in ("div_factor", "final_div_factor"):
        if not getattr(o, key) > 0:
            fail(f"optimizer.{key}", f"must be > 0, got {getattr(o, key)}")
    if not recipe.stages:
        fail("stages", "at least one stage is needed")
    names = [s.name for s in recipe.stages]
    if len(set(names)) != len(names):
        fail("stages", f"stage names must differ (they name the run folders), got {names}")
    for i, s in enumerate(recipe.stages):
        p = f"stages[{i}]"
        if s.epochs < 1:
            fail(f"{p}.epochs", f"must be >= 1, got {s.epochs}")
        if s.batch_size < 1:
            fail(f"{p}.batch_size", f"must be >= 1, got {s.batch_size}")
        if not s.lr > 0:
            fail(f"{p}.lr", f"must be > 0, got {s.lr}")
        if s.size is None and s.scale is None:
            fail(p, "give the training resolution as size: [H, W] or scale: 0.25")
        if s.size is not None and (len(s.size) != 2 or min(s.size) < 32):
            fail(f"{p}.size", f"must be [H, W] with H, W >= 32, got {s.size}")
        if s.scale is not None and not 0 < s.scale <= 1:
            fail(f"{p}.scale", f"must be in (0, 1], got {s.scale}")
        if len(s.crop_scale) != 2 or not 0 < s.crop_scale[0] <= s.crop_scale[1] <= 1:
            fail(f"{p}.crop_scale", f"must be [min, max] with 0 < min <= max <= 1, got {s.crop_scale}")
    t = recipe.trainer
    if t.precision not in ("32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "64-true"):
        fail("trainer.precision", f"unknown precision {t.precision!r}; use 32, 16-mixed or bf16-mixed")
    if isinstance(t.devices, int) and t.devices < 1:
        fail("trainer.devices", f"must be >= 1 or 'auto', got {t.devices}")
    if t.num_nodes < 1:
        fail("trainer.num_nodes", f"must be >= 1, got {t.num_nodes}")
    if t.log_every_n_steps < 1:
        fail("trainer.log_every_n_steps", f"must be >= 1, got {t.log_every_n_steps}")
    for key in ("limit_train_batches", "limit_val_batches"):
        v = getattr(t, key)
        if v is not None and not v > 0:
            fail(f"trainer.{key}", f"must be > 0 (or null for all batches), got {v}")
    if t.check_val_every_n_epoch < 1:
        fail("trainer.check_val_every_n_epoch", f"must be >= 1, got {t.check_val_every_n_epoch}")


def validate_paths(recipe: Recipe) -> None:
    """Check that the dataset root is set and exists (unless it is to be generated).

    Raises:
        RecipeError: ``data.root`` unset, missing, or without ``leftImg8bit/``.
    """
    root = recipe.data.root
    if not root:
        raise RecipeError("data.root: not set; give the Cityscapes root, e.g. --set data.root=/data/cityscapes")
    if recipe.data.generate is not None:
        return
    path = Path(root).expanduser()
    if not path.is_dir():
        raise RecipeError(f"data.root: dataset root {str(path)!r} does not exist; point --set data.root=... at the Cityscapes folder")
    if not (path / "leftImg8bit").is_dir():
        raise RecipeError(
            f"data.root: {str(path)!r} has no leftImg8bit/ folder; it must be the Cityscapes root holding leftImg8bit/, "
            f"gtFine/, disparity/ and camera/"
        )


def recipe_from_dict(data: dict[str, Any], check_paths: bool = True) -> Recipe:
    """Validate a recipe mapping (as read from YAML) into a :class:`Recipe`.

    Args:
        data: The mapping.
        check_paths: Also check that ``data.root`` exists (:func:`validate_paths`).

    Raises:
        RecipeError: the first problem found, naming its key path.
    """
    recipe = _dataclass_from(Recipe, data, "")
    _check_values(recipe)
    if check_paths:
        validate_paths(recipe)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain types (every default filled in)."""
    return dataclasses.asdict(recipe)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a recipe mapping (a modified deep copy).

    List items are addressed by index (``stages.0.epochs=2``); values are parsed with
    ``yaml.safe_load`` (``2`` -> int, ``[200, 512]`` -> list, ``null`` -> None).

    Raises:
        RecipeError: malformed override, or a path through a missing list item / non-mapping.
    """
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r}: expected key=value, e.g. stages.0.epochs=2")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise RecipeError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        parts = key.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"override {item!r}: {where!r} is not an item of a list of {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(f"override {item!r}: {'.'.join(parts[:depth])!r} is {node!r}, not a mapping or list")
    return data


def packaged_configs() -> list[str]:
    """Names of the recipes shipped with mtdense (``configs/*.yaml``)."""
    return sorted(p.stem for p in _CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(config: str | Path) -> Path:
    """A recipe path, or the name of a packaged recipe (``synthetic_demo``) -> its file.

    Raises:
        FileNotFoundError: neither a file nor a packaged recipe; lists the packaged ones.
    """
    path = Path(config).expanduser()
    if path.is_file():
        return path
    packaged = _CONFIG_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"recipe {str(config)!r} not found; give a YAML file or one of: {', '.join(packaged_configs())}")


def load_recipe(config: str | Path, overrides: list[str] | None = None, check_paths: bool = True) -> tuple[Recipe, str]:
    """Read, override and validate a recipe.

    Args:
        config: YAML path or packaged recipe name (``cityscapes_mobilenet_v3_small``).
        overrides: ``dotted.key=value`` strings applied before validation.
        check_paths: Check that ``data.root`` exists.

    Returns:
        ``(recipe, text)``: the validated recipe and the YAML text exactly as given.

    Raises:
        FileNotFoundError: no such recipe.
        RecipeError: invalid YAML or recipe; the message names the file and key path.
    """
    path = resolve_config_path(config)
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with stages:, data:, model:, ...; got {type(data).__name__}")
    try:
        return recipe_from_dict(apply_overrides(data, list(overrides or [])), check_paths=check_paths), text
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc}") from None


# -- running a recipe -----------------------------------------------------------------------
@dataclass
class StageResult:
    """What one stage left behind.

    Attributes:
        index: Stage position in the recipe.
        name: Stage name.
        dir: The stage's run folder (``checkpoints/``, ``tensorboard/``, ``csv/``).
        last: Checkpoint after the last epoch (the next stage starts from it).
        best: Checkpoint with the best validation score (mIoU; AbsRel without a seg task).
        best_score: That score.
        global_step: Optimiser steps taken in the stage.
    """

    index: int
    name: str
    dir: Path
    last: Path
    best: Path | None
    best_score: float | None
    global_step: int


@dataclass
class TrainResult:
    """The stages of a run, in order; ``final`` is the last stage's last checkpoint."""

    out_dir: Path
    stages: list[StageResult]

    @property
    def final(self) -> Path:
        return self.stages[-1].last


def stage_dir(out_dir: str | Path, index: int, stage: StageConfig) -> Path:
    """Run sub-folder of a stage: ``{out_dir}/stage{index}-{name}``."""
    return Path(out_dir) / f"stage{index}-{stage.name}"


def write_run_config(recipe: Recipe, out_dir: str | Path, text: str | None = None, overrides: list[str] | None = None) -> None:
    """Save ``recipe.yaml`` (the recipe as given, if ``text``) and ``config.yaml`` (resolved) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (out_dir / "recipe.yaml").write_text(text)
    header = "# Resolved recipe: every default filled in"
    if overrides:
        header += "; overrides: " + " ".join(overrides)
    body = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
    (out_dir / "config.yaml").write_text(f"{header}\n{body}")


def stage_sizes(recipe: Recipe, stage: StageConfig) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(train_size, val_size)`` of a stage.

    ``train_size`` is ``stage.size``, else the native frame size (after ``crop_bottom``) times
    ``stage.scale``. ``val_size`` is ``data.val_size``, else the native size times ``stage.scale``,
    else ``stage.size``.
    """
    from mtdense.train.datamodule import native_size, scaled_size

    d = recipe.data
    native = None
    if stage.scale is not None and (stage.size is None or d.val_size is None):
        native = native_size(d.root, "train", d.crop_bottom, d.depth_source)
    train_size = tuple(stage.size) if stage.size is not None else scaled_size(native, stage.scale)
    if d.val_size is not None:
        val_size = tuple(d.val_size)
    elif stage.scale is not None:
        val_size = scaled_size(native, stage.scale)
    else:
        val_size = train_size
    return train_size, val_size  # type: ignore[return-value]


def prepare_data(recipe: Recipe, progress: bool = True) -> Path:
    """Make sure ``data.root`` holds the data; generate the synthetic city if the recipe asks.

    With ``data.generate`` set, the city is generated unless ``root`` already holds one made
    with the same settings (see :func:`mtdense.data.synthetic.generate_city`).

    Returns:
        The dataset root.

    Raises:
        RecipeError: ``data.root`` unset or missing.
    """
    validate_paths(recipe)
    root = Path(recipe.data.root).expanduser()
    g = recipe.data.generate
    if g is not None:
        from mtdense.data import synthetic

        wanted = {"seed": g.seed, "size": list(g.size), "frames": {"train": g.n_train, "val": g.n_val, "test": 0}}
        meta_file = root / synthetic._META_FILE
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            if {k: meta.get(k) for k in wanted} == wanted:
                return root  # already generated with these settings
            overwrite = True  # a generated city with other settings: replace it
        elif any((root / f).exists() for f in ("leftImg8bit", "gtFine", "disparity")):
            raise RecipeError(
                f"data.root: {str(root)!r} holds a Cityscapes tree that the generator did not finish (no "
                f"{synthetic._META_FILE}); delete it or choose another folder for the generated city"
            )
        else:
            overwrite = False
        synthetic.generate_city(root, g.n_train, g.n_val, size=tuple(g.size), seed=g.seed, progress=progress, overwrite=overwrite)
    return root


def _read_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); it may be truncated") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint written by mtdense train (no state_dict / hyper_parameters)")
    return ckpt


def train(
    recipe: Recipe,
    out_dir: str | Path,
    resume: str | Path | None = None,
    recipe_text: str | None = None,
    overrides: list[str] | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Run every stage of a recipe, each with a fresh Lightning ``Trainer``.

    Stage ``i`` (folder :func:`stage_dir`) starts from stage ``i-1``'s last checkpoint; the
    first stage starts from ``model.pretrained``. Each stage keeps ``checkpoints/best.ckpt``
    (best validation mIoU) and ``checkpoints/last.ckpt``, and logs to TensorBoard and CSV.
    At the end, ``model.pth`` (the last weights, loadable with :func:`mtdense.load_model`)
    is written to ``out_dir``.

    Args:
        recipe: A validated recipe.
        out_dir: Run folder; ``recipe.yaml`` (as given) and ``config.yaml`` (resolved) go there.
        resume: A checkpoint of this run (usually ``stage*/checkpoints/last.ckpt``); training
            continues in its stage from its epoch and global step, then runs the later stages.
        recipe_text: The recipe's YAML as given, saved as ``recipe.yaml``.
        overrides: The ``--set`` overrides, recorded in ``config.yaml``.
        callbacks: Extra Lightning callbacks for every stage's ``Trainer``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        RecipeError: bad data root. ValueError / FileNotFoundError: bad ``resume`` checkpoint.
    """
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning.pytorch.utilities import rank_zero_only

    from mtdense.models import load_model, save_checkpoint
    from mtdense.train.datamodule import CityscapesDataModule
    from mtdense.train.module import MultiTaskModule

    root = prepare_data(recipe, progress=recipe.trainer.progress_bar)
    out_dir = Path(out_dir)
    model_cfg = {k: v for k, v in dataclasses.asdict(recipe.model).items() if k not in ("pretrained", "depth_init_m", "bn_momentum")}
    start, resume_path = 0, None
    if resume is not None:
        resume_path = Path(resume)
        hp = _read_checkpoint(resume_path)["hyper_parameters"]
        start = int((hp.get("stage") or {}).get("index", -1))
        if not 0 <= start < len(recipe.stages) or hp["stage"].get("name") != recipe.stages[start].name:
            raise ValueError(
                f"{resume_path}: written by stage {hp.get('stage')}, which this recipe's stages "
                f"{[s.name for s in recipe.stages]} do not have at that position; resume with the recipe that wrote it"
            )
        saved = hp.get("model_config", {})
        if saved.get("encoder") != recipe.model.encoder or saved.get("tasks") != recipe.model.tasks:
            raise ValueError(f"{resume_path}: holds model {saved}, the recipe builds {model_cfg}; resume with the same recipe")
    if rank_zero_only.rank == 0:
        write_run_config(recipe, out_dir, recipe_text, overrides)
    loss_config = dataclasses.asdict(recipe.loss)
    if recipe.loss.class_weights == "enet":
        from mtdense.data.cityscapes import class_pixel_counts
        from mtdense.losses import enet_class_weights

        counts = class_pixel_counts(root, "train", crop_bottom=recipe.data.crop_bottom,
                                    progress=recipe.trainer.progress_bar)
        loss_config["class_weights"] = [round(float(w), 6) for w in enet_class_weights(counts)]

    results: list[StageResult] = []
    previous: Path | None = None
    for i, stage in enumerate(recipe.stages):
        sdir = stage_dir(out_dir, i, stage)
        if i < start:
            previous = sdir / "checkpoints" / "last.ckpt"
            if not previous.is_file():
                raise FileNotFoundError(f"{previous}: stage {stage.name!r} of the resumed run has no last checkpoint")
            step = int(_read_checkpoint(previous).get("global_step", 0))
            results.append(StageResult(i, stage.name, sdir, previous, None, None, step))
            continue
        L.seed_everything(recipe.trainer.seed + i, workers=True, verbose=False)
        train_size, val_size = stage_sizes(recipe, stage)
        stage_info = {"index": i, "name": stage.name, "epochs": stage.epochs, "batch_size": stage.batch_size,
                      "train_size": list(train_size), "val_size": list(val_size) if val_size else None}
        fresh = i == 0 and resume_path is None
        module = MultiTaskModule(
            model_cfg,
            lr=stage.lr,
            loss_config=loss_config,
            optimizer_config=dataclasses.asdict(recipe.optimizer),
            pretrained=recipe.model.pretrained if fresh else False,
            stage=stage_info,
            depth_init_m=recipe.model.depth_init_m if fresh else None,
            bn_momentum=recipe.model.bn_momentum,
            channels_last=recipe.trainer.channels_last,
        )
        if previous is not None and not (resume_path is not None and i == start):
            module.load_state_dict(_read_checkpoint(previous)["state_dict"], strict=True)
        datamodule = CityscapesDataModule(
            root,
            batch_size=stage.batch_size,
            train_size=train_size,
            val_size=val_size,
            crop_scale=tuple(stage.crop_scale),
            zoom_depth=stage.zoom_depth,
            depth_source=recipe.data.depth_source,
            clean_disparity=recipe.data.clean_disparity,
            crop_bottom=recipe.data.crop_bottom,
            num_workers=recipe.data.num_workers,
            color_jitter=tuple(recipe.data.color_jitter),
            cache_in_memory=recipe.data.cache_in_memory,
        )
        has_seg = "seg" in recipe.model.tasks
        checkpoint = ModelCheckpoint(
            dirpath=sdir / "checkpoints",
            filename="best",
            monitor="val/miou" if has_seg else "val/abs_rel",
            mode="max" if has_seg else "min",
            save_top_k=1,
            enable_version_counter=False,
        )
        # last.ckpt after every training epoch (after its validation, if any): the best-checkpoint
        # callback writes only after validations, so with check_val_every_n_epoch > 1 its "last"
        # would miss the epochs after the final validation, and the next stage would start from them.
        last_checkpoint = ModelCheckpoint(
            dirpath=sdir / "checkpoints", save_top_k=0, save_last=True, save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        t = recipe.trainer
        trainer = L.Trainer(
            default_root_dir=sdir,
            max_epochs=stage.epochs,
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
            precision=t.precision,
            logger=[TensorBoardLogger(sdir, name="tensorboard"), CSVLogger(sdir, name="csv")],
            callbacks=[checkpoint, last_checkpoint, LearningRateMonitor(logging_interval="step"), *(callbacks or [])],
            log_every_n_steps=t.log_every_n_steps,
            limit_train_batches=t.limit_train_batches,
            limit_val_batches=t.limit_val_batches,
            check_val_every_n_epoch=t.check_val_every_n_epoch,
            deterministic=t.deterministic,
            enable_progress_bar=t.progress_bar,
            enable_model_summary=i == start,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path if i == start else None)
        last = sdir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise RuntimeError(f"stage {stage.name!r} finished without writing {last}; see the Lightning log above")
        # Read back from the checkpoint: with ddp_spawn this process's trainer did not train.
        saved = _read_checkpoint(last)
        state = saved.get("callbacks", {}).get(checkpoint.state_key, {})
        best = Path(state["best_model_path"]) if state.get("best_model_path") else None
        score = None if state.get("best_model_score") is None else float(state["best_model_score"])
        results.append(StageResult(i, stage.name, sdir, last, best, score, int(saved["global_step"])))
        previous = last

    if rank_zero_only.rank == 0:
        save_checkpoint(load_model(previous), out_dir / "model.pth", extra={"source": str(previous)})
    return TrainResult(out_dir, results)
