"""The training recipe: its schema (pydantic models) and how a YAML recipe becomes one.

A recipe names the data, the model, the loss, the optimiser, a list of stages (each a
resolution with its own epochs, batch size and one-cycle learning rate, starting from the
previous stage's weights) and the Lightning trainer settings::

    recipe, text = load_recipe("configs/synthetic_demo.yaml", overrides=["stages.0.epochs=2", "data.root=/data/cs"])

Each field carries its type, default and check; the sections below hold every default of a
recipe. Every key is checked before training starts: an unknown key, a wrong type or an
impossible value (negative epochs, a missing dataset root) raises :class:`RecipeError` naming
the file and the key by its path, e.g. ``stages[1].epochz``. Overrides are ``dotted.key=value``
with the value parsed as YAML (``stages.0.size=[200,512]``, ``model.pretrained=false``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mtdense.data.transforms import DEFAULT_COLOR_JITTER
from mtdense.losses import DEPTH_LOSSES, NORMALS_LOSSES, WEIGHTINGS
from mtdense.train.config import ConfigError, FieldError, Float, load_config, one_of, validate

__all__ = [
    "RecipeError", "SyntheticDataConfig", "DataConfig", "ModelConfig", "LossConfig", "OptimizerConfig", "StageConfig",
    "PseudoLabelStep",
    "TrainerConfig", "Recipe", "load_recipe", "recipe_from_dict", "recipe_to_dict",
    "validate_paths", "resolve_config_path", "packaged_configs",
]

_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "64-true")

RecipeError = ConfigError
"""A recipe that cannot be trained; the message names the file, the key path and the fix."""


# -- checks of values that a type alone cannot express ------------------------------------------
def _size(value: list[int]) -> list[int]:
    if len(value) != 2 or min(value) < 32:
        raise ValueError(f"must be [H, W] with H, W >= 32, got {value}")
    return value


def _color_jitter(value: list[float]) -> list[float]:
    if len(value) != 4 or any(v < 0 for v in value) or value[3] > 0.5:
        raise ValueError(f"must be [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, got {value}")
    return value


def _betas(value: list[float]) -> list[float]:
    if len(value) != 2 or not all(0 <= b < 1 for b in value):
        raise ValueError(f"must be two numbers in [0, 1), got {value}")
    return value


def _crop_scale(value: list[float]) -> list[float]:
    if len(value) != 2 or not 0 < value[0] <= value[1] <= 1:
        raise ValueError(f"must be [min, max] with 0 < min <= max <= 1, got {value}")
    return value


def _class_weighting(value: str | list[float] | None) -> str | list[float] | None:
    if isinstance(value, str) and value != "enet":
        raise ValueError(f"unknown class weighting {value!r}; valid: null, enet, or a list of one weight per class")
    return value


TRAIN_FORMATS = ("cityscapes", "folder", "nyuv2", "kitti")
"""Dataset formats a recipe trains on (``data.format``)."""

DEFAULT_SPLITS = {"kitti": ("train+semantics_train", "val+semantics_val")}
"""``(train, val)`` splits of a format whose data splits are not simply ``train`` and ``val``:
KITTI's depth frames and labelled frames are separate splits (see :mod:`mtdense.data.kitti`)."""


def _data_format(value: str) -> str:
    if value not in TRAIN_FORMATS:
        raise ValueError(f"unknown dataset format {value!r}; valid: {', '.join(TRAIN_FORMATS)}")
    return value


def _distinct_names(stages: list[StageConfig]) -> list[StageConfig]:
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must differ (they name the run folders), got {names}")
    return stages


Size = Annotated[list[int], AfterValidator(_size)]
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[Float, Field(ge=0)]
BatchLimit = Annotated[int, Field(gt=0)] | Annotated[Float, Field(gt=0)] | None


class Section(BaseModel):
    """A part of a recipe: strict types (``1`` is no boolean, ``"2"`` no number), no unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid")


class SyntheticDataConfig(Section):
    """How to generate the synthetic city into ``data.root`` (demo only)."""

    n_train: Positive = 400
    """Training frames."""
    n_val: Positive = 100
    """Validation frames (never used for training)."""
    size: Size = [128, 256]
    """Frame size ``[H, W]`` in pixels."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Generator seed (the same seed gives the same city)."""


class DataConfig(Section):
    """Where the data is, in which format, and how it is read."""

    root: str | None = None
    """Dataset root: for ``cityscapes`` the folder holding ``leftImg8bit/``, ``gtFine/``,
    ``disparity/``, ``camera/``; for ``folder`` the one holding ``dataset.yaml`` and ``images/``;
    for ``kitti`` the one holding ``raw/``, ``data_depth_annotated/`` and ``data_semantics/``."""
    format: Annotated[str, AfterValidator(_data_format)] = "cityscapes"
    """Dataset format: ``cityscapes``, ``folder`` (your own data, see :mod:`mtdense.data.folder`),
    ``nyuv2`` (:mod:`mtdense.data.nyuv2`) or ``kitti`` (:mod:`mtdense.data.kitti`); the other
    formats read their splits with :func:`mtdense.data.open_dataset` and ignore the
    Cityscapes-only keys (``depth_source``, ``clean_disparity``, ``crop_bottom``)."""
    train_split: str | None = None
    """The split the stages train on; ``null``: the format's own, ``train`` (``kitti``:
    ``train+semantics_train``, the depth frames and 160 of the 200 labelled frames; a KITTI part
    may be repeated, ``semantics_train*50``)."""
    val_split: str | None = None
    """The split validated on; ``null``: the format's own, ``val`` (``kitti``:
    ``val+semantics_val``, the depth frames of val and the other 40 labelled frames)."""
    depth_source: str = "disparity"
    """Depth ground truth: ``"disparity"`` (the shipped SGBM maps) or a teacher name known to
    :class:`mtdense.data.cityscapes.CityscapesDataset`."""
    clean_disparity: bool = False
    """Clean the SGBM disparity (border crop, median, inpainting)."""
    crop_bottom: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    """Fraction of image height removed at the bottom (ego vehicle)."""
    num_workers: Annotated[int, Field(ge=0)] = 4
    """DataLoader worker processes."""
    val_size: Size | None = None
    """``[H, W]`` the validation images are resized to during training; ``None``: the stage's
    training size (``size``), or the native size scaled by ``scale``."""
    generate: SyntheticDataConfig | None = None
    """Generate the synthetic city into ``root`` first (``mtdense demo``); ``null``: read ``root`` as it is."""
    color_jitter: Annotated[list[Float], AfterValidator(_color_jitter)] = list(DEFAULT_COLOR_JITTER)
    """Training colour jitter ``[brightness, contrast, saturation, hue]`` as in
    ``torchvision.transforms.v2.ColorJitter``; hue costs as much as the rest of the loading on a
    CPU (0 skips it)."""
    cache_in_memory: bool = False
    """Keep decoded frames in memory after the first epoch (later epochs only augment); for
    splits that fit in RAM, about ``H * W * 8`` bytes a frame."""
    sources: dict[str, Annotated[list[str], Field(min_length=1)]] | None = None
    """``kitti`` format: ``{seg: [semantic, OUT]}``, the real labels and a teacher's folder
    ``ROOT/OUT/PART/NAME.png`` (a stage's ``pseudo_label`` writes it). ``folder`` format: per task, the label folders the training split learns from, in order of
    preference, e.g. ``{seg: [masks, masks_teacher], depth: [depth, depth_mono]}``: a frame's label
    is the first folder's that has one (the real label wins where the frame has it, a teacher's
    fills in where it does not), a frame with none skips that task. Each folder lies under
    ``root`` in the encoding of the task's real folder (``masks/``, ``depth/``, ``normals/``), as
    ``mtdense data teacher`` writes it. Validation (and ``mtdense evaluate``) read the real
    folders only. ``null``: the real folders."""
    teacher_weight: dict[str, NonNegative] = {}
    """Per task of ``sources``, the loss weight of a frame whose label came from a folder other
    than the task's real one (a teacher's), e.g. ``{seg: 0.5}``; a task not named gets 1."""

    @model_validator(mode="after")
    def _check_sources(self) -> DataConfig:
        from mtdense.data.folder import LABEL_FOLDERS, check_source_name

        if self.sources is not None and self.format not in ("folder", "kitti"):
            raise FieldError("sources", f"label sources are folders of a folder or kitti dataset; the {self.format} "
                             f"format has its own labels: remove data.sources, or convert the data to the folder "
                             f"format (data.format=folder)")
        if self.sources is not None and self.format == "kitti":
            from mtdense.data.kitti import check_kitti_sources

            try:
                check_kitti_sources(self.sources)
            except ValueError as exc:
                raise FieldError("sources", str(exc)) from None
        for task, names in (self.sources or {}).items() if self.format == "folder" else ():
            if task not in LABEL_FOLDERS:
                raise FieldError(f"sources.{task}", f"{task!r} is not a task; give sources for "
                                 f"{', '.join(LABEL_FOLDERS)}")
            for name in names:
                try:
                    check_source_name(task, name)
                except ValueError as exc:
                    raise FieldError(f"sources.{task}", str(exc)) from None
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise FieldError(f"sources.{task}", f"names {', '.join(twice)} twice; name each folder once")
        for task in self.teacher_weight:
            if task not in (self.sources or {}):
                raise FieldError(f"teacher_weight.{task}", f"weighs teacher labels of {task}, but data.sources has "
                                 f"no {task} (it names {', '.join(self.sources or {}) or 'nothing'}); add "
                                 f"data.sources.{task} (e.g. [{LABEL_FOLDERS.get(task, 'masks')}, "
                                 f"{LABEL_FOLDERS.get(task, 'masks')}_teacher]) or remove the weight")
        return self

    def splits(self) -> tuple[str, str]:
        """``(train, val)``: :attr:`train_split` and :attr:`val_split`, or the format's defaults."""
        train, val = DEFAULT_SPLITS.get(self.format, ("train", "val"))
        return self.train_split or train, self.val_split or val


class ModelConfig(Section):
    """The network (arguments of :func:`mtdense.create_model`) and its initialisation."""

    encoder: str = "mobilenet_v3_small"
    """Encoder name (``mobilenet_v3_small``, ...)."""
    decoder_channels: Positive = 256
    """Light-Weight RefineNet width."""
    pretrained: bool | str = True
    """``true`` (ImageNet weights), ``false`` (random init) or a local weights path."""
    freeze_encoder: bool = False
    """Keep the encoder fixed."""
    tasks: dict[str, Positive] = {"seg": 19, "depth": 1}
    """Task -> output channels (``seg``: classes, ``depth``: 1, ``normals``: 3, surface normals as
    unit vectors). For a format other than ``cityscapes`` the dataset decides:
    ``seg: 19`` (the default) becomes the dataset's number of classes, and with the default
    tasks a task the dataset has no labels for is left out (see
    :func:`mtdense.train.runner.fit_to_dataset`)."""
    depth_init_m: Annotated[Float, Field(gt=0)] | None = None
    """A fresh depth head first predicts this depth (metres) everywhere (its output bias starts
    at the encoded value); ``null``: default initialisation."""
    bn_momentum: Annotated[Float, Field(gt=0, le=1)] | None = None
    """BatchNorm running-statistics momentum while training (torchvision's MobileNetV3 uses
    0.01; 0.1 suits short runs from random init); ``null``: keep it."""

    @model_validator(mode="after")
    def _fixed_channels(self) -> ModelConfig:
        from mtdense.models.factory import TASK_CHANNELS

        for task, channels in self.tasks.items():
            if task in TASK_CHANNELS and channels != TASK_CHANNELS[task]:
                raise FieldError(f"tasks.{task}", f"has {TASK_CHANNELS[task]} output channels, got {channels}; "
                                 f"--set model.tasks.{task}={TASK_CHANNELS[task]}")
        return self

    @model_validator(mode="after")
    def _depth_init_needs_depth(self) -> ModelConfig:
        if self.depth_init_m is not None and "depth" not in self.tasks:
            raise FieldError("depth_init_m", f"needs a depth task in model.tasks ({sorted(self.tasks)}), or null")
        return self

    def network(self) -> dict[str, Any]:
        """Arguments of :func:`mtdense.create_model` but ``pretrained`` (the model's own ``config``)."""
        return self.model_dump(include={"encoder", "decoder_channels", "freeze_encoder", "tasks"})


class LossConfig(Section):
    """The loss (arguments of :class:`mtdense.losses.MultiTaskLoss`)."""

    depth: Annotated[str, one_of(DEPTH_LOSSES, "depth loss")] = "mse"
    """Depth loss: ``mse``, ``l1``, ``berhu``, ``silog``."""
    normals: Annotated[str, one_of(NORMALS_LOSSES, "normals loss")] = "cosine"
    """Surface-normal loss (a ``normals`` task): ``cosine`` (``1 - cos`` of the angle, as MTAN and
    LibMTL) or ``l1`` (of the unit vectors)."""
    weighting: Annotated[str, one_of(WEIGHTINGS, "task weighting")] = "fixed"
    """``fixed`` (1:1 unless ``weights``), ``uncertainty`` (Kendall 2018), ``dwa`` (Liu 2019)."""
    weights: dict[str, NonNegative] = {}
    """Fixed task weights (``fixed`` only); a task not named gets 1."""
    dwa_temperature: Annotated[Float, Field(gt=0)] = 2.0
    """DWA temperature ``T``."""
    class_weights: Annotated[str | list[NonNegative] | None, AfterValidator(_class_weighting)] = None
    """Cross-entropy class weights: ``null`` (unweighted), ``enet`` (``1 / ln(1.02 + p_k)`` from
    the training split's class pixel shares, counted when training starts; the numbers are saved
    with the run) or one weight per class."""


class OptimizerConfig(Section):
    """Adam with a one-cycle cosine schedule stepped every optimiser step."""

    name: Literal["adam"] = "adam"
    """The optimiser (Adam only)."""
    weight_decay: NonNegative = 0.0
    """L2 penalty of Adam."""
    betas: Annotated[list[Float], AfterValidator(_betas)] = [0.9, 0.999]
    """Adam ``(beta1, beta2)``."""
    pct_start: Annotated[Float, Field(gt=0, lt=1)] = 0.3
    """Fraction of a stage's steps spent warming up to the stage's ``lr``."""
    div_factor: Annotated[Float, Field(gt=0)] = 25.0
    """Start lr = ``lr / div_factor``."""
    final_div_factor: Annotated[Float, Field(gt=0)] = 1e4
    """End lr = start lr / ``final_div_factor``."""


class PseudoLabelStep(Section):
    """A stage's pseudo-label step (the paper's "asymmetric annotations"): before the stage trains,
    a model labels the segmentation of the stage's training frames that have none, keeping the
    pixels it is confident of, into the label source folder ``out`` (``data.sources.seg`` lists it
    after the real labels). KITTI (``data.format: kitti``) only; for a folder dataset run
    ``mtdense data teacher ROOT --method model`` between two runs."""

    out: str = "semantic_pseudo"
    """The label source folder under ``data.root`` (``ROOT/OUT/PART/NAME.png``)."""
    threshold: Annotated[Float, Field(ge=0, le=1)] = 0.9
    """Least softmax probability of the winning class to keep a pixel (the rest are ignored)."""
    checkpoint: str | None = None
    """The labelling model (e.g. a bigger mtdense model); ``null``: the previous stage's last weights."""
    size: Size | None = None
    """Network input ``[H, W]`` while labelling; ``null``: the previous stage's validation size."""


class StageConfig(Section):
    """One training stage; each starts from the previous stage's final weights.

    Give the training crop as ``size`` (``[H, W]`` pixels) or as ``scale`` (fraction of the
    dataset's native frame size after ``crop_bottom``, rounded down to a multiple of 8), or both
    (then ``size`` is the crop and ``scale`` only sizes validation).
    """

    name: str
    """Stage name (run sub-folder)."""
    epochs: Positive
    """Epochs."""
    batch_size: Positive
    """Images per step and process."""
    lr: Annotated[Float, Field(gt=0)]
    """Peak learning rate of the one-cycle cosine schedule."""
    size: Size | None = None
    """Training crop ``[H, W]``."""
    scale: Annotated[Float, Field(gt=0, le=1)] | None = None
    """Resolution relative to the native frames."""
    crop_scale: Annotated[list[Float], AfterValidator(_crop_scale)] = [0.5, 1.0]
    """Random-resized-crop area range ``[min, max]`` relative to the image."""
    zoom_depth: bool = False
    """Divide the depth target by each crop's magnification (image width / crop width), so that
    an enlarged crop, whose objects look nearer, is taught nearer depths; keeps apparent size and
    depth consistent for a monocular network."""
    train_split: str | None = None
    """The split this stage trains on; ``null``: ``data.train_split`` (e.g. a first stage on the
    labelled frames only, ``semantics_train*10`` for KITTI)."""
    pseudo_label: PseudoLabelStep | None = None
    """Label the training frames without segmentation before the stage trains (see
    :class:`PseudoLabelStep`); ``null``: no such step."""

    @model_validator(mode="after")
    def _has_resolution(self) -> StageConfig:
        if self.size is None and self.scale is None:
            raise ValueError("give the training resolution as size: [H, W] or scale: 0.25")
        return self


class TrainerConfig(Section):
    """Lightning ``Trainer`` settings (see its documentation for each)."""

    accelerator: str = "auto"
    """``auto``, ``cpu``, ``gpu``, ..."""
    devices: Positive | str = "auto"
    """Devices per node (an int or ``auto``)."""
    num_nodes: Positive = 1
    """Machines."""
    strategy: str = "auto"
    """``auto``, ``ddp``, ``ddp_spawn``, ..."""
    precision: Annotated[str, one_of(PRECISIONS, "precision")] = "32"
    """``32``, ``16-mixed`` or ``bf16-mixed`` (or another of Lightning's)."""
    seed: int = 0
    """Seed of every process (``lightning.seed_everything``); stage ``i`` uses ``seed + i``."""
    log_every_n_steps: Positive = 10
    """Logging interval."""
    limit_train_batches: BatchLimit = None
    """Batches per epoch (int) or fraction; ``null`` = all (tests/smoke runs)."""
    limit_val_batches: BatchLimit = None
    """As above for validation."""
    check_val_every_n_epoch: Positive = 1
    """Validation interval in epochs."""
    checkpoint_minutes: NonNegative = 10.0
    """Write the resume point (``checkpoints/last.ckpt``) every this many minutes within an
    epoch, besides after every epoch; ``0``: after epochs only."""
    deterministic: bool = False
    """Deterministic algorithms."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""
    channels_last: bool = True
    """Train in NHWC memory format (about 2x faster steps for MobileNet on a CPU, and the layout
    tensor cores prefer under mixed precision)."""


class Recipe(Section):
    """A whole training recipe. Build with :func:`load_recipe` or :func:`recipe_from_dict`."""

    stages: Annotated[list[StageConfig], Field(min_length=1), AfterValidator(_distinct_names)]
    """The stages, run in order."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The dataset."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The network."""
    loss: LossConfig = Field(default_factory=LossConfig)
    """The loss."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    """The optimiser and its schedule."""
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    """The Lightning trainer."""
    name: str = "mtdense"
    """Recipe name (the default run folder is ``runs/<name>/<time>``)."""

    @model_validator(mode="after")
    def _loss_fits_the_tasks(self) -> Recipe:
        tasks = self.model.tasks
        unknown = set(self.loss.weights) - set(tasks)
        if unknown:
            raise FieldError("loss.weights", f"weights for tasks {sorted(unknown)} that model.tasks ({sorted(tasks)}) lacks")
        weights = self.loss.class_weights
        if weights is not None and "seg" not in tasks:
            raise FieldError("loss.class_weights", "class weights need a seg task in model.tasks")
        if isinstance(weights, list) and len(weights) != tasks["seg"]:
            raise FieldError("loss.class_weights", f"{len(weights)} weights for the {tasks['seg']} classes of model.tasks.seg")
        for task in self.data.sources or {}:
            if task not in tasks:
                raise FieldError(f"data.sources.{task}", f"the model has no {task} task (model.tasks: "
                                 f"{', '.join(tasks)}); remove data.sources.{task}, or add the task to model.tasks")
        for i, stage in enumerate(self.stages):
            step = stage.pseudo_label
            if step is None:
                continue
            where = f"stages[{i}].pseudo_label"
            if self.data.format != "kitti":
                raise FieldError(where, f"a recipe's pseudo-label step writes KITTI's layout; for a {self.data.format} "
                                 f"dataset label it between two runs with 'mtdense data teacher ROOT --method model' "
                                 f"and list the folder in data.sources")
            if "seg" not in tasks:
                raise FieldError(where, "labels segmentation, which model.tasks lacks")
            if i == 0 and step.checkpoint is None:
                raise FieldError(where, "the first stage has no previous stage to label with; give "
                                 "pseudo_label.checkpoint, or train a stage on the labelled frames first")
            if step.out not in (self.data.sources or {}).get("seg", []):
                raise FieldError(where, f"writes {step.out}/, which data.sources.seg does not list, so no stage would "
                                 f"learn from it; set data.sources: {{seg: [semantic, {step.out}]}}")
        return self


# -- from YAML -------------------------------------------------------------------------------
def validate_paths(recipe: Recipe) -> None:
    """Check that the dataset root is set and exists (unless it is to be generated).

    Raises:
        RecipeError: ``data.root`` unset or missing; a Cityscapes root without ``leftImg8bit/``,
            a folder root without ``dataset.yaml``, a KITTI root without any of its folders.
    """
    root = recipe.data.root
    fmt = recipe.data.format
    if not root:
        raise RecipeError(f"data.root: not set; give the dataset root, e.g. --set data.root=/data/{fmt}")
    if recipe.data.generate is not None:
        if fmt != "cityscapes":
            raise RecipeError(f"data.generate: generates the synthetic city in the cityscapes format, not {fmt}; "
                              f"--set data.generate=null to read {root} as it is")
        return
    path = Path(root).expanduser()
    if not path.is_dir():
        raise RecipeError(f"data.root: dataset root {str(path)!r} does not exist; point --set data.root=... at the {fmt} folder")
    if fmt == "folder":
        if not (path / "dataset.yaml").is_file():
            raise RecipeError(f"data.root: {str(path)!r} has no dataset.yaml; a folder dataset describes itself there "
                              f"('classes: [name, ...]') beside images/SPLIT/")
        from mtdense.data.folder import LABEL_FOLDERS

        for task, names in (recipe.data.sources or {}).items():
            for name in names:
                if name != LABEL_FOLDERS[task] and not (path / name).is_dir():
                    raise RecipeError(f"data.sources.{task}: {str(path / name)!r} does not exist; write it with "
                                      f"'mtdense data teacher {path} --out ...' (a teacher's labels), or fix the name")
        return
    if fmt == "kitti":
        from mtdense.data.kitti import KITTI_MARKERS

        if not any((path / m).is_dir() for m in KITTI_MARKERS):
            raise RecipeError(f"data.root: {str(path)!r} has none of {', '.join(m + '/' for m in KITTI_MARKERS)}; a KITTI "
                              f"root holds the raw drives in raw/DATE/DRIVE/, the depth benchmark in data_depth_annotated/ "
                              f"and the semantic frames in data_semantics/")
        return
    if fmt != "cityscapes":
        return
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
    recipe = validate(Recipe, data)
    if check_paths:
        validate_paths(recipe)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain types (every default filled in)."""
    return recipe.model_dump()


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
    recipe, text = load_config(Recipe, path, list(overrides or []))
    if check_paths:
        try:
            validate_paths(recipe)
        except RecipeError as exc:
            raise RecipeError(f"{path}: {exc}") from None
    return recipe, text
