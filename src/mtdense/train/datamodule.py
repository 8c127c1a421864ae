"""The LightningDataModule: a dataset's train/val splits at one stage's resolution.

Listing and decoding are the format's dataset's job (:class:`mtdense.data.cityscapes.CityscapesDataset`
for ``cityscapes``, :func:`mtdense.data.open_dataset` for the other formats), augmentation
is :mod:`mtdense.data.transforms`' (one random draw shared by image, mask and depth). The train
order and each sample's random draws come from ``(seed, epoch, sample)``
(:class:`~mtdense.train.resume.EpochSampler`), so a resumed run replays them. Lightning wraps
the sampler in a distributed one when it runs on several processes.

With label sources (``data.sources``, ``folder`` and ``kitti`` formats) the training split reads each task's
label from the first of its folders that has one (a teacher's where the real one is missing);
its batches carry ``sources`` (task -> the folder of each frame's label) and, for the tasks of
``data.teacher_weight``, ``label_weight`` (task -> ``B`` per-frame loss weights: the teacher
weight where the label is a teacher's, 1 otherwise). Validation reads the real labels only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from torch.utils.data import Dataset

from mtdense.data.cityscapes import CityscapesDataset
from mtdense.data.description import DatasetInfo
from mtdense.data.labels import NUM_CLASSES
from mtdense.data.open import open_dataset
from mtdense.data.transforms import EvalTransform, TrainTransform
from mtdense.train.resume import EpochSampler, SeededSamples
from mtdense.train.schema import DataConfig, RecipeError, StageConfig

__all__ = ["CityscapesDataModule", "DenseDataModule", "LabelSources", "dataset_info", "native_size", "scaled_size"]

# Defaults for use without a recipe: the recipe's own, written once in mtdense.train.schema.
_DATA = DataConfig()
_STAGE = {k: f.default for k, f in StageConfig.model_fields.items() if not f.is_required()}


def native_size(root: str | Path, split: str = "train", crop_bottom: float = 0.0, depth_source: str = "disparity",
                format: str = "cityscapes") -> tuple[int, int]:
    """``(H, W)`` of the split's first frame as the dataset yields it (after ``crop_bottom``, Cityscapes only)."""
    if format == "cityscapes":
        ds = CityscapesDataset(root, split, depth_source=depth_source, crop_bottom=crop_bottom)
    else:
        ds = open_dataset(root, split, format=format)
    if len(ds) == 0:
        raise ValueError(f"{root}: split {split!r} has no frames")
    h, w = ds[0]["image"].shape[:2]
    return int(h), int(w)


def dataset_info(root: str | Path, format: str = "cityscapes", split: str = "train",
                 depth_source: str | None = "disparity") -> DatasetInfo:
    """The :class:`~mtdense.data.description.DatasetInfo` of a recipe's dataset (its train split).

    A Cityscapes-layout root has ``normals`` when it holds ``normals/SPLIT/`` (the synthetic city).
    """
    if format == "cityscapes":
        from mtdense.data.cityscapes import NORMALS_FOLDER

        tasks = ["seg"] + (["depth"] if depth_source is not None else [])
        if (Path(root) / NORMALS_FOLDER / split).is_dir():
            tasks.append("normals")
        return DatasetInfo.cityscapes(tasks=tasks)
    return open_dataset(root, split, format=format).info


class LabelSources:
    """A transform that keeps a sample's label sources (which the joint transforms drop) and gives
    each task named in ``teacher_weight`` a loss weight.

    Args:
        transform: The joint transform (:class:`~mtdense.data.transforms.TrainTransform`).
        teacher_weight: Task -> weight of a label that came from a folder other than the task's
            real one; a real label, or none, weighs 1.
        real: Task -> the source name of its real labels (default
            :data:`mtdense.data.folder.LABEL_FOLDERS`; KITTI: ``semantic`` and ``groundtruth``).

    The output has ``sources`` (task -> folder, ``""``: no label) and, for the tasks of
    ``teacher_weight``, ``label_weight`` (task -> float32 scalar), which batch to ``B`` lists and
    ``B`` tensors.
    """

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]], teacher_weight: Mapping[str, float],
                 real: Mapping[str, str] | None = None):
        from mtdense.data.folder import LABEL_FOLDERS

        self.transform = transform
        self.teacher_weight = {t: float(w) for t, w in teacher_weight.items()}
        self.real = dict(LABEL_FOLDERS if real is None else real)

    def weight(self, task: str, source: str) -> float:
        """The loss weight of a ``task`` label from folder ``source``."""
        if source in ("", self.real.get(task)):
            return 1.0
        return self.teacher_weight.get(task, 1.0)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        sources = dict(sample["sources"])
        out = self.transform(sample)
        out["sources"] = sources
        if self.teacher_weight:
            out["label_weight"] = {t: torch.tensor(self.weight(t, sources[t]), dtype=torch.float32)
                                   for t in self.teacher_weight if t in sources}
        return out

    def __repr__(self) -> str:
        return f"LabelSources({self.transform!r}, teacher_weight={self.teacher_weight})"


def scaled_size(size: tuple[int, int], scale: float, multiple: int = 8) -> tuple[int, int]:
    """``size * scale`` rounded down to a multiple of ``multiple`` (at least ``multiple``)."""
    return tuple(max(multiple, int(s * scale) // multiple * multiple) for s in size)  # type: ignore[return-value]


class CityscapesDataModule(L.LightningDataModule):
    """Train and val loaders over a dataset root (Cityscapes layout by default).

    Build it from a recipe with :meth:`from_config`; the defaults are the recipe's.

    Args:
        root: Dataset root (``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/``).
        batch_size: Training images per step and process.
        train_size: Training crop ``(H, W)``.
        val_size: Validation images are resized to ``(H, W)``; ``None`` keeps their size.
        crop_scale: Random-resized-crop area range ``(min, max)``.
        zoom_depth: Divide training depth by each crop's magnification relative to validation
            (images resized to ``val_size``, or native) (see
            :class:`~mtdense.data.transforms.JointResizedCrop`).
        color_jitter: ``(brightness, contrast, saturation, hue)`` of the training colour jitter,
            ``True`` for the default, ``False`` for none.
        depth_source: Depth ground truth (``"disparity"`` or a teacher name).
        clean_disparity: Clean SGBM disparity before converting to depth.
        crop_bottom: Fraction of the height removed at the bottom (ego vehicle).
        num_workers: Loader worker processes.
        val_batch_size: Validation batch size (default ``batch_size``).
        cache_in_memory: Keep decoded frames in memory (see
            :class:`~mtdense.data.cityscapes.CityscapesDataset`).
        seed: Seed of the training order and augmentation (:attr:`train_sampler`).
        format: Dataset format (``cityscapes``, ``folder``, ``nyuv2``, ``kitti``); the formats
            other than ``cityscapes`` are opened with :func:`mtdense.data.open_dataset` and take no
            ``depth_source`` / ``clean_disparity`` / ``crop_bottom``.
        num_classes: Segmentation classes ``K`` the transforms accept (seg ``0..K-1`` or 255).
        tasks: Tasks to load (``folder`` and ``kitti``; default: all the dataset has; ``cityscapes``
            loads normals only when they are named here).
        train_split: The split trained on (``kitti``: e.g. ``train+semantics_train``).
        val_split: The split validated on.
        sources: ``folder`` and ``kitti``: task -> label folders of the training split in order of
            preference (``data.sources``); validation reads the real folders.
        teacher_weight: Task -> loss weight of a teacher's label (``data.teacher_weight``).

    Raises:
        RecipeError: ``sources`` on a format other than ``folder``, or for a task not in ``tasks``
            (the message names the ``data.sources`` key).
    """

    def __init__(
        self,
        root: str | Path,
        batch_size: int,
        train_size: tuple[int, int],
        val_size: tuple[int, int] | None = None,
        crop_scale: Sequence[float] = _STAGE["crop_scale"],
        depth_source: str = _DATA.depth_source,
        clean_disparity: bool = _DATA.clean_disparity,
        crop_bottom: float = _DATA.crop_bottom,
        num_workers: int = _DATA.num_workers,
        val_batch_size: int | None = None,
        zoom_depth: bool = _STAGE["zoom_depth"],
        color_jitter: Sequence[float] | bool = True,
        cache_in_memory: bool = _DATA.cache_in_memory,
        seed: int = 0,
        format: str = "cityscapes",
        num_classes: int = NUM_CLASSES,
        tasks: Sequence[str] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        sources: Mapping[str, Sequence[str]] | None = None,
        teacher_weight: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if sources is not None and format not in ("folder", "kitti"):
            raise RecipeError(f"data.sources: label sources are folders of a folder or kitti dataset, not of the {format} "
                              f"format; remove data.sources")
        for task in sources or {}:
            if tasks is not None and task not in tasks:
                raise RecipeError(f"data.sources.{task}: the model has no {task} task (it trains {', '.join(tasks)}); "
                                  f"{root} has no real {task} labels in any split, which validation and evaluation "
                                  f"read: add some (at least to the val split), or remove data.sources.{task}")
        unknown = sorted(set(teacher_weight or {}) - set(sources or {}))
        if unknown:
            raise RecipeError(f"data.teacher_weight.{unknown[0]}: data.sources has no {unknown[0]}; add its sources "
                              f"or remove the weight")
        self.sources = None if sources is None else {t: list(v) for t, v in sources.items()}
        self.teacher_weight = dict(teacher_weight or {})
        self.root = Path(root)
        self.format = format
        self.train_split, self.val_split = str(train_split), str(val_split)
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.train_size = (int(train_size[0]), int(train_size[1]))
        self.val_size = None if val_size is None else (int(val_size[0]), int(val_size[1]))
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.zoom_depth = bool(zoom_depth)
        self.color_jitter = color_jitter
        if format == "cityscapes":
            self.dataset_kwargs = {"depth_source": depth_source, "clean_disparity": clean_disparity,
                                   "crop_bottom": crop_bottom, "cache_in_memory": bool(cache_in_memory),
                                   "load_normals": tasks is not None and "normals" in tasks}
        else:
            self.dataset_kwargs = {"cache_in_memory": bool(cache_in_memory)}
            if format in ("folder", "kitti") and tasks is not None:
                self.dataset_kwargs["tasks"] = list(tasks)
        self.num_workers = int(num_workers)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.train_sampler = EpochSampler(seed)

    @classmethod
    def from_config(
        cls, data: DataConfig, stage: StageConfig, train_size: tuple[int, int], val_size: tuple[int, int] | None,
        seed: int = 0, num_classes: int = NUM_CLASSES, tasks: Sequence[str] | None = None,
    ) -> CityscapesDataModule:
        """The loaders of one stage of a recipe.

        Args:
            data: The recipe's ``data:`` section (``root`` set).
            stage: The stage (batch size, crop range, depth zoom).
            train_size: The stage's training crop ``(H, W)``.
            val_size: The stage's validation size ``(H, W)``, ``None``: native.
            seed: Seed of the training order and augmentation.
            num_classes: The model's segmentation classes (``model.tasks.seg``).
            tasks: The model's tasks (a ``folder`` or ``kitti`` dataset loads these).
        """
        same_names = {"depth_source", "clean_disparity", "crop_bottom", "num_workers", "color_jitter", "cache_in_memory",
                      "format", "sources", "teacher_weight"}
        train_split, val_split = data.splits()
        train_split = stage.train_split or train_split
        return cls(
            Path(str(data.root)).expanduser(), batch_size=stage.batch_size, train_size=train_size, val_size=val_size,
            crop_scale=stage.crop_scale, zoom_depth=stage.zoom_depth, seed=seed, num_classes=num_classes, tasks=tasks,
            train_split=train_split, val_split=val_split, **data.model_dump(include=same_names),
        )

    def _dataset(self, split: str, transform: Callable[[dict[str, Any]], dict[str, Any]], **kwargs: Any) -> Dataset:
        if self.format == "cityscapes":
            return CityscapesDataset(self.root, split, transform=transform, **self.dataset_kwargs)
        return open_dataset(self.root, split, format=self.format, transform=transform, **self.dataset_kwargs, **kwargs)

    def train_dataset(self) -> Dataset:
        """The augmented training split (its labels from :attr:`sources` where given)."""
        transform = TrainTransform(
            size=self.train_size, scale=self.crop_scale, zoom_depth=self.zoom_depth, color_jitter=self.color_jitter,
            reference_width=None if self.val_size is None else self.val_size[1], num_classes=self.num_classes,
        )
        if self.sources is None:
            return self._dataset(self.train_split, transform)
        real = None
        if self.format == "kitti":
            from mtdense.data.kitti import REAL_SOURCES as real
        return self._dataset(self.train_split, LabelSources(transform, self.teacher_weight, real), sources=self.sources)

    def val_dataset(self) -> Dataset:
        """The validation split (resized to ``val_size`` if set, no augmentation; real labels only)."""
        return self._dataset(self.val_split, EvalTransform(size=self.val_size, num_classes=self.num_classes))

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self.train_dataset()
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = self.val_dataset()

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        if train:
            self.train_sampler.size = len(dataset)
        return DataLoader(
            SeededSamples(dataset) if train else dataset,
            batch_size=batch_size,
            sampler=self.train_sampler if train else None,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"{self.root}: the {self.train_split} split has {len(self.train_set)} frames, fewer than "
                f"batch_size={self.batch_size}; "
                f"lower the stage's batch_size"
            )
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, self.val_batch_size, train=False)


DenseDataModule = CityscapesDataModule
"""The same data module under a name that does not suggest one format."""
