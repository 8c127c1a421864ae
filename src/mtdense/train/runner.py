"""The stage runner: every stage of a recipe, each with a fresh Lightning ``Trainer``.

    recipe, text = load_recipe("cityscapes_mobilenet_v3_small", ["data.root=/data/cityscapes"])
    result = train(recipe, "runs/cs", recipe_text=text)

Stage ``i`` (folder :func:`stage_dir`) starts from stage ``i-1``'s last checkpoint; the first
starts from ``model.pretrained``. A stage may train on a split of its own (``train_split``) and
begin with a pseudo-label step (``pseudo_label``, :func:`pseudo_label_stage`): the model so far
labels the segmentation of its training frames that have none. The run folder keeps the recipe (``recipe.yaml``, with the
``--set`` overrides applied) and its resolved form (``config.yaml``, every default filled in).
Each stage writes its resume point ``checkpoints/last.ckpt`` after every epoch and every
``trainer.checkpoint_minutes`` (:mod:`mtdense.train.resume`); :func:`train` with ``resume`` set
to the run folder continues from the newest one and ends as an uninterrupted run would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from mtdense.models.weights import read_checkpoint
from mtdense.io import file_sha256, write_text_atomic, write_yaml_atomic
from mtdense.models import load_model, save_checkpoint
from mtdense.train.config import apply_overrides, parse_mapping
from mtdense.data.description import DatasetInfo
from mtdense.models.factory import DEFAULT_TASKS
from mtdense.train.config import validate
from mtdense.train.datamodule import CityscapesDataModule, dataset_info, native_size, scaled_size
from mtdense.train.module import MultiTaskModule
from mtdense.train.prepare import prepare_data
from mtdense.train.resume import LAST, AtomicCheckpointIO, ResumePoint, newest_checkpoint
from mtdense.train.schema import Recipe, RecipeError, StageConfig, TrainerConfig, recipe_to_dict

__all__ = ["StageResult", "TrainResult", "train", "fit_to_dataset", "resume_point", "stage_dir", "stage_sizes",
           "write_run_config", "pseudo_label_stage"]


@dataclass
class StageResult:
    """What one stage left behind.

    Attributes:
        index: Stage position in the recipe.
        name: Stage name.
        dir: The stage's run folder (``checkpoints/``, ``tensorboard/``, ``csv/``).
        last: Checkpoint after the last epoch (the next stage starts from it).
        best: Checkpoint with the best validation score (mIoU; AbsRel without a seg task; the mean
            normal angle with normals alone).
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
    """Save the recipe in ``out_dir``: ``recipe.yaml`` (if ``text``) and ``config.yaml`` (resolved).

    ``recipe.yaml`` is the recipe as given with ``overrides`` applied, so that it trains (or
    resumes) the same run again; where the overrides change nothing it is ``text`` itself,
    comments included. ``config.yaml`` has every default filled in and names the overrides.
    """
    out_dir = Path(out_dir)
    if text is not None:
        given = parse_mapping(text, "the recipe as given")
        effective = apply_overrides(given, list(overrides or []))
        if effective == given:
            write_text_atomic(out_dir / "recipe.yaml", text)
        else:
            write_yaml_atomic(out_dir / "recipe.yaml", effective)
    header = "# Resolved recipe: every default filled in"
    if overrides:
        header += "; overrides: " + " ".join(overrides)
    body = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
    write_text_atomic(out_dir / "config.yaml", f"{header}\n{body}")


def stage_sizes(recipe: Recipe, stage: StageConfig) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(train_size, val_size)`` of a stage.

    ``train_size`` is ``stage.size``, else the native frame size (after ``crop_bottom``) times
    ``stage.scale``. ``val_size`` is ``data.val_size``, else the native size times ``stage.scale``,
    else ``stage.size``.
    """
    d = recipe.data
    by_scale = None
    if stage.scale is not None and (stage.size is None or d.val_size is None):
        by_scale = scaled_size(native_size(str(d.root), d.splits()[0], d.crop_bottom, d.depth_source, d.format), stage.scale)
    train_size = (stage.size[0], stage.size[1]) if stage.size is not None else by_scale
    if d.val_size is not None:
        return train_size, (d.val_size[0], d.val_size[1])  # type: ignore[return-value]
    return train_size, by_scale or train_size  # type: ignore[return-value]


def fit_to_dataset(recipe: Recipe) -> tuple[Recipe, DatasetInfo]:
    """The recipe with ``model.tasks`` fitted to its dataset, and the dataset's description.

    For ``cityscapes`` the recipe is kept as it is (19 classes). For the other formats the
    dataset decides: ``model.tasks.seg`` at the default 19 becomes the dataset's number of
    classes ``K``; with the default tasks (``{seg: 19, depth: 1}``) a task the dataset has no
    labels for is left out. The tasks are those of the training split (``data.train_split``; for
    ``kitti`` by default the depth frames and labelled frames together).

    Raises:
        RecipeError: ``model.tasks.seg`` set to a number other than 19 and ``K``, a task the
            dataset has no labels for named in ``model.tasks``, or no task left.
    """
    d = recipe.data
    info = dataset_info(Path(str(d.root)).expanduser(), d.format, split=d.splits()[0], depth_source=d.depth_source)
    if d.format == "cityscapes":
        missing = [t for t in recipe.model.tasks if t not in info.tasks]
        if missing:
            raise RecipeError(f"model.tasks: {', '.join(missing)} has no labels in {d.root} (it has "
                              f"{', '.join(info.tasks)}); leave {', '.join(missing)} out of model.tasks"
                              + (f"; normals come with the synthetic city since this version: delete {d.root} and "
                                 f"generate it again (a city made before has no normals/)" if "normals" in missing else ""))
        return recipe, DatasetInfo.cityscapes(tasks=[t for t in info.tasks if t in recipe.model.tasks])
    given = dict(recipe.model.tasks)
    default = given == DEFAULT_TASKS
    tasks: dict[str, int] = {}
    for task, channels in given.items():
        if task not in info.tasks:
            if default:
                continue
            raise RecipeError(f"model.tasks: {task} has no labels in {d.root} (it has {', '.join(info.tasks)}); "
                              f"leave {task} out of model.tasks")
        if task == "seg" and channels != info.num_classes:
            if channels != DEFAULT_TASKS["seg"]:
                raise RecipeError(f"model.tasks.seg: {channels} classes, but the dataset {d.root} has {info.num_classes} "
                                  f"({', '.join(info.classes)}); --set model.tasks.seg={info.num_classes} or leave it at the "
                                  f"default")
            channels = info.num_classes
        tasks[task] = channels
    if not tasks:
        raise RecipeError(f"model.tasks: none of {sorted(given)} has labels in {d.root} (it has {', '.join(info.tasks)})")
    data = recipe_to_dict(recipe)
    data["model"]["tasks"] = tasks
    if data["model"].get("depth_init_m") is not None and "depth" not in tasks:
        data["model"]["depth_init_m"] = None
    fitted = validate(Recipe, data)
    info = DatasetInfo.from_dict({**info.to_dict(), "tasks": [t for t in info.tasks if t in tasks]})
    return fitted, info


def _read_checkpoint(path: Path) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint written by mtdense train (no state_dict / hyper_parameters)")
    return ckpt


def _resumed_stage(recipe: Recipe, resume: Path) -> int:
    """The index of the stage that wrote ``resume``, checked against the recipe."""
    hp = _read_checkpoint(resume)["hyper_parameters"]
    stage = hp.get("stage") or {}
    index = int(stage.get("index", -1))
    if not 0 <= index < len(recipe.stages) or stage.get("name") != recipe.stages[index].name:
        raise ValueError(
            f"{resume}: written by stage {hp.get('stage')}, which this recipe's stages "
            f"{[s.name for s in recipe.stages]} do not have at that position; resume with the recipe that wrote it"
        )
    saved = hp.get("model_config", {})
    if saved.get("encoder") != recipe.model.encoder or saved.get("tasks") != recipe.model.tasks:
        raise ValueError(f"{resume}: holds model {saved}, the recipe builds {recipe.model.network()}; resume with the same recipe")
    return index


def _with_class_weights(recipe: Recipe, root: Path) -> Recipe:
    """The recipe with ``loss.class_weights: enet`` counted on the training split (numbers)."""
    if recipe.loss.class_weights != "enet":
        return recipe
    from mtdense.data.cityscapes import class_pixel_counts
    from mtdense.losses import enet_class_weights

    if recipe.data.format == "cityscapes":
        counts = class_pixel_counts(root, recipe.data.splits()[0], crop_bottom=recipe.data.crop_bottom,
                                    progress=recipe.trainer.progress_bar)
    else:
        import numpy as np

        from mtdense.data.open import open_dataset

        k = recipe.model.tasks["seg"]
        counts = np.zeros(k, dtype=np.int64)
        dataset = open_dataset(root, recipe.data.splits()[0], format=recipe.data.format)
        if recipe.data.format == "kitti":  # read only the labels: the depth frames carry none
            from mtdense.data.kitti import read_kitti_semantic

            segs = (read_kitti_semantic(f.semantic) for f in dataset.frames if f.semantic is not None)
        else:
            segs = (np.asarray(sample["seg"]) for sample in dataset)
        for seg in segs:
            counts += np.bincount(seg[seg < k].ravel(), minlength=k)[:k]
    weights = [round(float(w), 6) for w in enet_class_weights(counts)]
    return recipe.model_copy(update={"loss": recipe.loss.model_copy(update={"class_weights": weights})})


# TrainerConfig keys that are Lightning Trainer arguments of the same name.
_TRAINER_ARGS = {"accelerator", "devices", "num_nodes", "strategy", "precision", "log_every_n_steps", "limit_train_batches",
                 "limit_val_batches", "check_val_every_n_epoch", "deterministic"}


def _trainer(t: TrainerConfig, sdir: Path, epochs: int, callbacks: list[Any], summary: bool) -> L.Trainer:
    return L.Trainer(
        default_root_dir=sdir,
        max_epochs=epochs,
        logger=[TensorBoardLogger(sdir, name="tensorboard"), CSVLogger(sdir, name="csv")],
        callbacks=callbacks,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=summary,
        plugins=[AtomicCheckpointIO()],
        **t.model_dump(include=_TRAINER_ARGS),
    )


# The score best.ckpt keeps, by the first task the model has: (logged key, mode).
_BEST = {"seg": ("val/miou", "max"), "depth": ("val/abs_rel", "min"), "normals": ("val/normal_mean", "min")}


def _best_checkpoint(sdir: Path, tasks: Any) -> ModelCheckpoint:
    """``best.ckpt``: the best validation score (mIoU; AbsRel without a seg task; the mean normal
    angle with normals alone)."""
    monitor, mode = next((_BEST[t] for t in _BEST if t in tasks), _BEST["seg"])
    return ModelCheckpoint(
        dirpath=sdir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
    )


def _run_stage(
    recipe: Recipe,
    index: int,
    sdir: Path,
    previous: Path | None,
    resume: Path | None,
    callbacks: list[Any],
    info: DatasetInfo | None = None,
) -> StageResult:
    """Train stage ``index`` from ``previous``'s weights, or continue it from ``resume``."""
    stage = recipe.stages[index]
    L.seed_everything(recipe.trainer.seed + index, workers=True, verbose=False)
    train_size, val_size = stage_sizes(recipe, stage)
    record = {"index": index, "name": stage.name, "epochs": stage.epochs, "batch_size": stage.batch_size,
              "train_size": list(train_size), "val_size": list(val_size) if val_size else None}
    module = MultiTaskModule.from_config(recipe, record, fresh=previous is None and resume is None,
                                         dataset_info=None if info is None else info.to_dict())
    if previous is not None and resume is None:
        module.load_state_dict(_read_checkpoint(previous)["state_dict"], strict=True)
    seed = recipe.trainer.seed + index
    tasks = recipe.model.tasks
    datamodule = CityscapesDataModule.from_config(recipe.data, stage, train_size, val_size, seed=seed,
                                                  num_classes=tasks.get("seg", 19), tasks=list(tasks))
    best = _best_checkpoint(sdir, recipe.model.tasks)
    # last.ckpt after every training epoch (after its validation, if any) and every
    # checkpoint_minutes, whatever the validation interval: the resume point, and the weights
    # the next stage starts from.
    resume_point = ResumePoint(sdir / "checkpoints" / LAST, datamodule.train_sampler, stage.batch_size,
                               recipe.trainer.checkpoint_minutes)
    first_trained = previous is None or resume is not None  # the first stage this call trains
    trainer = _trainer(recipe.trainer, sdir, stage.epochs, summary=first_trained, callbacks=[
        best, resume_point, LearningRateMonitor(logging_interval="step"), *callbacks,
    ])
    with warnings.catch_warnings():
        # Lightning cannot see that the train sampler resumes mid-epoch (ResumePoint tells it).
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    return _trained_stage(index, stage, sdir, best.state_key)


def _trained_stage(index: int, stage: StageConfig, sdir: Path, best_key: str | None = None,
                   last: Path | None = None) -> StageResult:
    """What a stage left, read back from its last checkpoint (with ddp_spawn this process did not train)."""
    last = last or sdir / "checkpoints" / LAST
    if not last.is_file():
        raise RuntimeError(f"stage {stage.name!r} finished without writing {last}; see the Lightning log above")
    saved = _read_checkpoint(last)
    callbacks = saved.get("callbacks", {})
    if best_key is None:  # a stage trained by an earlier call: its (only) best-checkpoint state
        best_key = next((k for k in callbacks if k.startswith("ModelCheckpoint")), "")
    state = callbacks.get(best_key, {})
    best = Path(state["best_model_path"]) if state.get("best_model_path") else None
    score = None if state.get("best_model_score") is None else float(state["best_model_score"])
    return StageResult(index, stage.name, sdir, last, best, score, int(saved["global_step"]))


def pseudo_label_stage(recipe: Recipe, index: int, teacher: Path | None, progress: bool = True) -> dict[str, Any]:
    """The pseudo-label step of stage ``index`` (``stages[index].pseudo_label``): the teacher (the
    step's ``checkpoint``, else ``teacher``, the previous stage's last checkpoint) labels the
    segmentation of the stage's training frames that have none, into ``ROOT/OUT``.

    Frames labelled by this teacher before (a resumed run) are kept; labels of another teacher
    (the checkpoint's SHA-256 differs) are replaced. The summary goes to the log and is returned.

    Raises:
        RecipeError: No teacher. ValueError / FileNotFoundError: what labelling raises.
    """
    from mtdense.teachers.model import PseudoLabeler, pseudo_label_kitti

    stage = recipe.stages[index]
    step = stage.pseudo_label
    assert step is not None
    source = Path(step.checkpoint).expanduser() if step.checkpoint else teacher
    if source is None or not source.is_file():
        raise RecipeError(f"stages[{index}].pseudo_label: no labelling model ({source or 'no previous stage'}); give "
                          f"pseudo_label.checkpoint")
    size = step.size
    if size is None and index > 0:
        size = stage_sizes(recipe, recipe.stages[index - 1])[1]
    elif size is None:
        size = stage_sizes(recipe, stage)[1]
    device = "cuda" if torch.cuda.is_available() and recipe.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
    labeler = PseudoLabeler(source, threshold=step.threshold, size=tuple(size) if size else None, device=device)
    split = stage.train_split or recipe.data.splits()[0]
    rank_zero_info(f"stage {stage.name!r}: pseudo-labels for {split} from {source} (p >= {step.threshold:g}) -> "
                   f"{Path(str(recipe.data.root)) / step.out}")
    summary = pseudo_label_kitti(Path(str(recipe.data.root)).expanduser(), labeler, split=split, out=step.out,
                                 progress=progress, model_id=file_sha256(source),
                                 on_failure=lambda message: rank_zero_info(message))
    rank_zero_info(summary.format())
    return summary.as_dict()


def _finished_stage(index: int, stage: StageConfig, sdir: Path) -> StageResult:
    """A stage before the resumed one: its last checkpoint must be there."""
    last = sdir / "checkpoints" / LAST
    if not last.is_file():
        raise FileNotFoundError(f"{last}: stage {stage.name!r} of the resumed run has no last checkpoint")
    return _trained_stage(index, stage, sdir)


def _stage_complete(checkpoint: Path, stage: StageConfig) -> bool:
    """Whether ``checkpoint`` was written after the stage's last epoch."""
    saved = _read_checkpoint(checkpoint)
    position = saved.get("callbacks", {}).get("ResumePoint")
    if position is not None:
        return int(position["epoch"]) >= stage.epochs
    return int(saved.get("epoch", -1)) + 1 >= stage.epochs


def resume_point(recipe: Recipe, resume: str | Path | None) -> Path | None:
    """The checkpoint to continue from: ``resume`` itself, or a run folder's newest one."""
    if resume is None:
        return None
    resume = Path(resume)
    if not resume.is_dir():
        if not resume.is_file():
            raise FileNotFoundError(f"{resume}: no such run folder or checkpoint; give the run folder of 'mtdense train'")
        return resume
    found = newest_checkpoint([stage_dir(resume, i, s) for i, s in enumerate(recipe.stages)])
    if found is None:
        rank_zero_info(f"{resume}: no checkpoint yet (killed in its first epoch); training the run from its start")
        return None
    return found[1]


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
    (best validation mIoU) and ``checkpoints/last.ckpt`` (after every epoch and every
    ``trainer.checkpoint_minutes``), and logs to TensorBoard and CSV. At the end, ``model.pth``
    (the last weights, loadable with :func:`mtdense.load_model`) is written to ``out_dir``.

    Args:
        recipe: A validated recipe.
        out_dir: Run folder; ``recipe.yaml`` and ``config.yaml`` go there (:func:`write_run_config`).
        resume: The run folder of a killed run (its newest checkpoint, in whichever stage, is
            found), or one of its checkpoints. Training continues in that stage from its epoch,
            batch and global step, then runs the later stages; the result equals an
            uninterrupted run's on one process.
        recipe_text: The recipe's YAML as given; with ``overrides`` applied, saved as ``recipe.yaml``.
        overrides: The ``--set`` overrides the recipe was loaded with.
        callbacks: Extra Lightning callbacks for every stage's ``Trainer``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        RecipeError: bad data root. ValueError / FileNotFoundError: bad ``resume`` checkpoint.
    """
    root = prepare_data(recipe, progress=recipe.trainer.progress_bar)
    recipe, info = fit_to_dataset(recipe)
    out_dir = Path(out_dir)
    resume_path = resume_point(recipe, resume)
    start = 0 if resume_path is None else _resumed_stage(recipe, resume_path)
    if rank_zero_only.rank == 0:
        write_run_config(recipe, out_dir, recipe_text, overrides)
    recipe = _with_class_weights(recipe, root)
    results: list[StageResult] = []
    for i, stage in enumerate(recipe.stages):
        sdir = stage_dir(out_dir, i, stage)
        if i < start:
            results.append(_finished_stage(i, stage, sdir))
        elif i == start and resume_path is not None and _stage_complete(resume_path, stage):
            results.append(_trained_stage(i, stage, sdir, last=resume_path))  # killed between stages
        else:
            previous = results[-1].last if results else None
            if stage.pseudo_label is not None:
                pseudo_label_stage(recipe, i, previous, progress=recipe.trainer.progress_bar)
            results.append(_run_stage(recipe, i, sdir, previous, resume_path if i == start else None, list(callbacks or []),
                                       info))
    if rank_zero_only.rank == 0:
        final = results[-1].last
        save_checkpoint(load_model(final), out_dir / "model.pth",
                        extra={"source": str(final), "dataset_info": info.to_dict()})
    return TrainResult(out_dir, results)
