"""Training losses: one per task, a task weighting, and their sum.

Each task loss is computed on the pixels that carry a label only: segmentation uses
cross-entropy with ``ignore_index`` (255), depth uses the pixels where
:func:`mtdense.data.depth.valid_depth_mask` holds, compared in the encoded space of the
network's depth head (``y = log(clip(depth_m, ., 250)) / 5``, :func:`mtdense.data.depth.encode_depth`),
and surface normals use the pixels whose target vector is not all zero (cosine or L1 distance
of unit vectors, :func:`normals_loss`).
A batch without a single labelled pixel gives a zero loss that is still part of the graph,
never NaN, so every process in a distributed run takes part in the backward pass.

Each task loss optionally takes per-image weights (``sample_weight``, ``B`` numbers >= 0, e.g. a
lower weight for a frame whose label came from a teacher): an image's labelled pixels then count
``w`` times in the sum, still divided by the number of labelled pixels (so weights below 1 lower
the loss; all weights 1 give the unweighted loss).

The weighting turns the raw task losses into the weighted terms ``loss_<task>``; the total
``loss`` is their sum, taken in one place (:meth:`MultiTaskLoss.combine`)::

    criterion = MultiTaskLoss(depth_loss="mse", weighting="fixed")
    losses = criterion(model(images), {"seg": seg, "depth": depth_m})
    losses["loss"].backward()        # losses == {"loss_seg", "loss_depth", "loss"}
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from mtdense.data.depth import encode_depth, valid_depth_mask
from mtdense.data.labels import IGNORE_INDEX

if TYPE_CHECKING:  # the recipe schema imports this module; only the type is needed here
    from mtdense.train.schema import LossConfig

__all__ = [
    "DEPTH_LOSSES", "NORMALS_LOSSES", "WEIGHTINGS", "TASKS", "segmentation_loss", "depth_loss", "normals_loss",
    "TaskWeighting", "FixedWeighting",
    "UncertaintyWeighting", "DynamicWeightAverage", "create_weighting", "MultiTaskLoss",
]

DEPTH_LOSSES = ("mse", "l1", "berhu", "silog")
NORMALS_LOSSES = ("cosine", "l1")
WEIGHTINGS = ("fixed", "uncertainty", "dwa")
# Tasks with a loss here; "regression" tasks get 1/(2 sigma^2) in uncertainty weighting.
TASKS = {"seg": "classification", "depth": "regression", "normals": "regression"}


def _zero_with_graph(t: torch.Tensor) -> torch.Tensor:
    # A 0 that depends on every output keeps the graph (and DDP's gradient buckets) intact.
    return t.sum() * 0.0


def _check_sample_weight(sample_weight: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """``sample_weight`` as a ``B`` float tensor, refusing another shape or a negative or non-finite weight."""
    w = torch.as_tensor(sample_weight)
    if w.shape != (batch,):
        raise ValueError(f"{what}: sample_weight must hold one weight per image ({batch}), got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{what}: sample weights must be finite numbers >= 0, got {w.tolist()}")
    return w


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX, class_weights: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over the labelled pixels.

    Args:
        logits: ``B x C x H x W`` class scores.
        target: ``B x H x W`` int64 train ids in ``0..C-1``, ``ignore_index`` = no label.
        ignore_index: Label that contributes nothing (255 for Cityscapes).
        class_weights: Optional ``C`` weights (e.g. :func:`enet_class_weights`); the mean is
            then weighted, as in ``F.cross_entropy(weight=...)``.
        sample_weight: Optional ``B`` weights >= 0, one per image: each pixel's term is multiplied
            by its image's weight, the divisor stays that of the unweighted mean.

    Returns:
        Scalar mean cross-entropy over the labelled pixels; 0 (with a graph) when there is none.

    Raises:
        ValueError: shapes disagree, or ``target`` holds a label outside ``0..C-1`` and
            ``ignore_index``.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"segmentation loss: logits must be B x C x H x W and target B x H x W of the same B, H, W; got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    labelled = target != ignore_index
    if not bool(labelled.any()):
        return _zero_with_graph(logits)
    bad = labelled & ((target < 0) | (target >= logits.shape[1]))
    if bool(bad.any()):
        raise ValueError(
            f"segmentation loss: target labels {torch.unique(target[bad]).tolist()[:10]} are outside 0..{logits.shape[1] - 1} "
            f"and are not the ignore label {ignore_index}; map label ids to train ids first "
            f"(mtdense.data.labels.label_ids_to_train_ids)"
        )
    if sample_weight is None:
        return F.cross_entropy(logits, target.long(), weight=class_weights, ignore_index=ignore_index)
    w = _check_sample_weight(sample_weight, logits.shape[0], "segmentation loss").to(logits.device, logits.dtype)
    # per pixel: class weight x cross-entropy (0 where ignored); divided as F.cross_entropy's mean is
    per_pixel = F.cross_entropy(logits, target.long(), weight=class_weights, ignore_index=ignore_index, reduction="none")
    if class_weights is None:
        divisor = labelled.sum().to(logits.dtype)
    else:
        divisor = class_weights.to(logits.dtype)[target[labelled].long()].sum()
    return (per_pixel * w[:, None, None]).sum() / divisor


def enet_class_weights(pixel_counts: Sequence[float] | torch.Tensor, c: float = 1.02) -> torch.Tensor:
    """Class weights ``1 / ln(c + p_k)`` from class pixel counts (Paszke et al. 2016, ENet).

    ``p_k`` is class ``k``'s share of the labelled pixels. Rare classes (poles, traffic lights,
    persons) get up to ``1 / ln(c)`` (about 50), the road about 3: the loss then rewards
    getting thin and rare classes right, which is what mIoU (a mean over classes) measures.

    Args:
        pixel_counts: Labelled pixels per class (see
            :func:`mtdense.data.cityscapes.class_pixel_counts`).
        c: The offset that bounds the largest weight.

    Returns:
        float32 tensor of ``len(pixel_counts)`` weights.
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    if counts.ndim != 1 or bool((counts < 0).any()) or not float(counts.sum()) > 0:
        raise ValueError(f"class pixel counts must be a non-negative vector with a positive sum, got {counts.tolist()}")
    if not c > 1:
        raise ValueError(f"the ENet offset c must be > 1 (weights are 1 / ln(c + p)), got {c}")
    return (1.0 / torch.log(c + counts / counts.sum())).float()


def depth_loss(
    pred: torch.Tensor,
    depth_m: torch.Tensor,
    kind: str = "mse",
    berhu_threshold: float = 0.2,
    silog_lambda: float = 0.5,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Depth loss over the pixels with a valid depth, in the encoded space of the depth head.

    Args:
        pred: ``B x 1 x H x W`` (or ``B x H x W``) network depth output, encoded
            (``y = log(depth_m) / 5``).
        depth_m: ``B x H x W`` target depth in metres, 0 = invalid.
        kind: ``"mse"`` (the recipe), ``"l1"``, ``"berhu"`` (reverse Huber, Laina et al. 2016:
            L1 below ``c = berhu_threshold * max|e|`` in the batch, scaled L2 above) or
            ``"silog"`` (scale-invariant log error, Eigen et al. 2014, per image:
            ``mean(e^2) - silog_lambda * mean(e)^2`` with ``e`` the difference of encoded log
            depths, averaged over the images that have valid pixels).
        berhu_threshold: Fraction of the largest absolute error where berHu turns quadratic.
        silog_lambda: Weight of the scale-invariance term, in ``[0, 1]`` (1 = fully invariant).
        sample_weight: Optional ``B`` weights >= 0, one per image: each valid pixel's term (silog:
            each image's term) is multiplied by its image's weight, the divisor stays that of the
            unweighted mean (the berHu threshold is the batch's, unweighted).

    Returns:
        Scalar loss; 0 (with a graph) when no pixel of the batch has a valid depth.

    Raises:
        ValueError: unknown ``kind`` or shapes that disagree.
    """
    if kind not in DEPTH_LOSSES:
        raise ValueError(f"depth loss: unknown kind {kind!r}; valid: {', '.join(DEPTH_LOSSES)}")
    if pred.ndim == 4:
        if pred.shape[1] != 1:
            raise ValueError(f"depth loss: expected one depth channel, got pred of shape {tuple(pred.shape)}")
        pred = pred[:, 0]
    if pred.shape != depth_m.shape:
        raise ValueError(
            f"depth loss: pred {tuple(pred.shape)} and target {tuple(depth_m.shape)} differ; both must be B x H x W"
        )
    valid = valid_depth_mask(depth_m)
    w = None if sample_weight is None else _check_sample_weight(sample_weight, pred.shape[0], "depth loss")
    if not bool(valid.any()):
        return _zero_with_graph(pred)
    # Encode only valid depths: invalid ones (0 m) have no logarithm and must not reach the graph.
    target = encode_depth(depth_m[valid]).to(pred.dtype)
    err = pred[valid] - target
    if w is not None or kind == "silog":  # the image of each valid pixel
        image_of = torch.arange(pred.shape[0], device=pred.device)[:, None, None].expand_as(valid)[valid]
    if kind in ("mse", "l1", "berhu"):
        if kind == "mse":
            per_pixel = err.pow(2)
        elif kind == "l1":
            per_pixel = err.abs()
        else:
            abs_err = err.abs()
            c = (berhu_threshold * abs_err.max()).detach().clamp_min(torch.finfo(abs_err.dtype).tiny)
            per_pixel = torch.where(abs_err <= c, abs_err, (abs_err.pow(2) + c * c) / (2 * c))
        if w is None:
            return per_pixel.mean()
        return (per_pixel * w.to(per_pixel.device, per_pixel.dtype)[image_of]).mean()
    # silog: per-image statistics through an index of the valid pixels' image.
    n = torch.bincount(image_of, minlength=pred.shape[0]).to(err.dtype)
    s1 = torch.zeros_like(n).index_add(0, image_of, err)
    s2 = torch.zeros_like(n).index_add(0, image_of, err * err)
    has = n > 0
    mean1, mean2 = s1[has] / n[has], s2[has] / n[has]
    per_image = mean2 - silog_lambda * mean1.pow(2)
    if w is None:
        return per_image.mean()
    return (per_image * w.to(per_image.device, per_image.dtype)[has]).mean()


def normals_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "cosine",
                 sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Surface-normal loss over the pixels with a target normal.

    Args:
        pred: ``B x 3 x H x W`` predicted normals (the network's unit vectors; renormalised here,
            so any non-zero vectors work).
        target: ``B x 3 x H x W`` target unit normals, all-zero = no label.
        kind: ``"cosine"``: ``mean(1 - cos(pred, target))`` (the loss of MTAN and LibMTL, 0 for
            equal directions, 2 for opposite ones); ``"l1"``: ``mean(|pred - target|_1)``, the L1
            norm of the difference of the unit vectors summed over the three components.
        sample_weight: Optional ``B`` weights >= 0, one per image: each labelled pixel's term is
            multiplied by its image's weight, the divisor stays the number of labelled pixels.

    Returns:
        Scalar mean over the labelled pixels; 0 (with a graph) when there is none.

    Raises:
        ValueError: unknown ``kind``, or shapes other than two equal ``B x 3 x H x W``.
    """
    if kind not in NORMALS_LOSSES:
        raise ValueError(f"normals loss: unknown kind {kind!r}; valid: {', '.join(NORMALS_LOSSES)}")
    if pred.ndim != 4 or pred.shape[1] != 3 or target.shape != pred.shape:
        raise ValueError(f"normals loss: pred and target must both be B x 3 x H x W; got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    valid = target.detach().abs().sum(1) > 0
    w = None if sample_weight is None else _check_sample_weight(sample_weight, pred.shape[0], "normals loss")
    if not bool(valid.any()):
        return _zero_with_graph(pred)
    p = F.normalize(pred.movedim(1, -1)[valid], dim=-1, eps=1e-6)  # N x 3
    t = F.normalize(target.movedim(1, -1)[valid].to(p.dtype), dim=-1, eps=1e-6)
    per_pixel = 1.0 - (p * t).sum(-1) if kind == "cosine" else (p - t).abs().sum(-1)
    if w is None:
        return per_pixel.mean()
    image_of = torch.arange(pred.shape[0], device=pred.device)[:, None, None].expand_as(valid)[valid]
    return (per_pixel * w.to(per_pixel.device, per_pixel.dtype)[image_of]).mean()


class TaskWeighting(nn.Module, abc.ABC):
    """Turns raw task losses into weighted terms. Subclasses implement :meth:`forward` and :meth:`weights`.

    Args:
        tasks: Names of the weighted tasks, e.g. ``("seg", "depth")``.
    """

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        if not tasks:
            raise ValueError("task weighting: no tasks given")
        self.tasks = list(tasks)

    def _check(self, raw: Mapping[str, torch.Tensor]) -> None:
        if set(raw) != set(self.tasks):
            raise ValueError(f"task weighting: got losses for {sorted(raw)}, expected exactly {sorted(self.tasks)}")

    @abc.abstractmethod
    def forward(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map ``{task: raw scalar loss}`` to ``{task: weighted scalar term}``."""

    @abc.abstractmethod
    def weights(self) -> dict[str, float]:
        """The current multiplier of each raw task loss (for logging)."""

    def end_epoch(self) -> None:
        """Called once at the end of each training epoch; stateless weightings ignore it."""

    def observe(self, raw: Mapping[str, torch.Tensor]) -> None:
        """Called with each training step's raw losses; stateless weightings ignore it."""


class FixedWeighting(TaskWeighting):
    """Constant weights: ``w_t * L_t`` (the recipe sums unweighted, 1:1).

    Args:
        tasks: Task names.
        weights: Task -> non-negative weight; tasks not named get 1.0.
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None):
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = set(weights) - set(tasks)
        if unknown:
            raise ValueError(f"fixed weighting: weights for unknown tasks {sorted(unknown)}; tasks: {list(tasks)}")
        for t, w in weights.items():
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise ValueError(f"fixed weighting: weight of task {t!r} must be a finite number >= 0, got {w!r}")
        self._weights = {t: float(weights.get(t, 1.0)) for t in tasks}

    def forward(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(raw)
        return {t: self._weights[t] * raw[t] for t in self.tasks}

    def weights(self) -> dict[str, float]:
        return dict(self._weights)


class UncertaintyWeighting(TaskWeighting):
    """Learned homoscedastic-uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018).

    Each task has a learnable log-variance ``s = log sigma^2`` (an ``nn.Parameter``, start 0).
    Classification: ``exp(-s) * L + s / 2``; regression: ``exp(-s) / 2 * L + s / 2``
    (the paper's eq. 7 and 10 written with ``s``). The optimiser must include these
    parameters (they are, when the loss is a submodule of the LightningModule).

    Args:
        tasks: Task names; each must be a key of :data:`TASKS` to know its kind.
    """

    def __init__(self, tasks: Sequence[str]):
        super().__init__(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"uncertainty weighting: no task kind for {unknown}; known: {sorted(TASKS)}")
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def _scale(self, task: str) -> torch.Tensor:
        s = self.log_vars[task]
        return torch.exp(-s) * (0.5 if TASKS[task] == "regression" else 1.0)

    def forward(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(raw)
        return {t: self._scale(t) * raw[t] + 0.5 * self.log_vars[t] for t in self.tasks}

    def weights(self) -> dict[str, float]:
        return {t: float(self._scale(t).detach()) for t in self.tasks}


class DynamicWeightAverage(TaskWeighting):
    """Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019).

    ``w_t(e) = K * softmax_t(r_t(e-1) / T)`` with ``r_t(e-1) = L_t(e-1) / L_t(e-2)`` the ratio of
    the task's mean training loss over the two previous epochs, ``K`` tasks, temperature ``T``.
    The first two epochs use weight 1. Epoch means are :class:`torchmetrics.MeanMetric`, so
    every process of a distributed run gets the same weights. The history is in buffers, so
    a resumed run continues with the weights it had.

    Args:
        tasks: Task names.
        temperature: ``T`` (2 in the paper); larger is smoother.
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0):
        super().__init__(tasks)
        if not temperature > 0:
            raise ValueError(f"dynamic weight average: temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.epoch_means = nn.ModuleDict({t: MeanMetric() for t in tasks})
        # history[0] = epoch e-2, history[1] = epoch e-1; epochs_seen counts completed epochs.
        self.register_buffer("history", torch.zeros(2, len(tasks)))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("current", torch.ones(len(tasks)))

    def observe(self, raw: Mapping[str, torch.Tensor]) -> None:
        self._check(raw)
        for t in self.tasks:
            self.epoch_means[t].update(raw[t].detach().float())

    def end_epoch(self) -> None:
        if any(self.epoch_means[t].update_count == 0 for t in self.tasks):
            return  # no training step this epoch (e.g. a resumed, finished run): nothing to learn from
        means = torch.stack([self.epoch_means[t].compute().to(self.history) for t in self.tasks])
        for t in self.tasks:
            self.epoch_means[t].reset()
        self.history[0] = self.history[1]
        self.history[1] = means
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            ratio = self.history[1] / self.history[0].clamp_min(1e-12)
            self.current = len(self.tasks) * torch.softmax(ratio / self.temperature, dim=0)

    def forward(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(raw)
        return {t: self.current[i].to(raw[t].dtype) * raw[t] for i, t in enumerate(self.tasks)}

    def weights(self) -> dict[str, float]:
        return {t: float(self.current[i]) for i, t in enumerate(self.tasks)}


def create_weighting(
    name: str,
    tasks: Sequence[str],
    weights: Mapping[str, float] | None = None,
    temperature: float = 2.0,
) -> TaskWeighting:
    """Build a task weighting by name: ``"fixed"``, ``"uncertainty"`` or ``"dwa"``.

    Args:
        name: Weighting name.
        tasks: Task names.
        weights: Fixed weights (``"fixed"`` only; default 1 each).
        temperature: DWA temperature (``"dwa"`` only).
    """
    if name == "fixed":
        return FixedWeighting(tasks, weights)
    if weights and any(float(w) != 1.0 for w in weights.values()):
        raise ValueError(f"task weighting {name!r} learns or computes its weights; fixed weights {dict(weights)} apply to 'fixed' only")
    if name == "uncertainty":
        return UncertaintyWeighting(tasks)
    if name == "dwa":
        return DynamicWeightAverage(tasks, temperature)
    raise ValueError(f"unknown task weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")


class MultiTaskLoss(nn.Module):
    """Segmentation, depth and surface-normal losses with a task weighting.

    Args:
        tasks: Tasks with a loss, a subset of ``("seg", "depth", "normals")`` (default seg and depth).
        depth_loss: ``"mse"`` (default, the recipe), ``"l1"``, ``"berhu"`` or ``"silog"``.
        weighting: ``"fixed"`` (default, 1:1), ``"uncertainty"`` or ``"dwa"``.
        weights: Fixed per-task weights (``weighting="fixed"`` only).
        dwa_temperature: Temperature of ``"dwa"``.
        ignore_index: Segmentation label without a loss.
        class_weights: Per-class cross-entropy weights (a list of ``C`` numbers, e.g.
            :func:`enet_class_weights`); ``None``: unweighted (the recipe).
        normals_loss: ``"cosine"`` (default) or ``"l1"`` (see :func:`normals_loss`).

    ``forward(outputs, targets)`` takes the model's ``{"seg": B x C x H x W logits, "depth":
    B x 1 x H x W encoded, "normals": B x 3 x H x W}`` and ``{"seg": B x H x W int64, "depth":
    B x H x W metres, "normals": B x 3 x H x W}`` (a batch dict from the data pipeline works as
    is) and returns ``{"loss_<task>", ..., "loss"}``: the weighted term of each task and their sum.
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("seg", "depth"),
        depth_loss: str = "mse",
        weighting: str = "fixed",
        weights: Mapping[str, float] | None = None,
        dwa_temperature: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
        class_weights: Sequence[float] | None = None,
        normals_loss: str = "cosine",
    ):
        super().__init__()
        tasks = list(tasks)
        if isinstance(class_weights, str):
            raise ValueError(
                f"loss: class_weights={class_weights!r} must be resolved to numbers first "
                f"(mtdense.losses.enet_class_weights on the training split's class pixel counts)"
            )
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weight is not None and (weight.ndim != 1 or not bool(torch.isfinite(weight).all()) or bool((weight < 0).any())):
            raise ValueError(f"loss: class_weights must be a list of finite numbers >= 0, got {class_weights}")
        self.register_buffer("class_weights", weight, persistent=False)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(
                f"loss: no loss for tasks {unknown or tasks}; losses exist for {sorted(TASKS)}. Remove the task from "
                f"model.tasks or add its loss to mtdense.losses"
            )
        if depth_loss not in DEPTH_LOSSES:
            raise ValueError(f"loss: unknown depth loss {depth_loss!r}; valid: {', '.join(DEPTH_LOSSES)}")
        if normals_loss not in NORMALS_LOSSES:
            raise ValueError(f"loss: unknown normals loss {normals_loss!r}; valid: {', '.join(NORMALS_LOSSES)}")
        self.tasks = tasks
        self.depth_loss = depth_loss
        self.normals_loss = normals_loss
        self.ignore_index = ignore_index
        self.weighting = create_weighting(weighting, tasks, weights, dwa_temperature)

    @classmethod
    def from_config(cls, cfg: LossConfig, tasks: Sequence[str]) -> MultiTaskLoss:
        """The loss a recipe's ``loss:`` section describes, for the model's ``tasks``.

        Args:
            cfg: The section; ``class_weights`` must be numbers or ``None`` (``enet`` is
                resolved on the training split first, see :func:`enet_class_weights`).
            tasks: Tasks with a loss, a subset of ``("seg", "depth", "normals")``.
        """
        return cls(tasks=tasks, depth_loss=cfg.depth, weighting=cfg.weighting, weights=cfg.weights,
                   dwa_temperature=cfg.dwa_temperature, class_weights=cfg.class_weights, normals_loss=cfg.normals)

    def task_losses(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                    sample_weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Raw (unweighted by the task weighting) loss of each task: ``{"seg": ..., "depth": ..., "normals": ...}``.

        Args:
            outputs: The model's outputs.
            targets: The targets (a batch dict).
            sample_weights: Optional task -> ``B`` per-image weights (a batch's ``label_weight``:
                lower for a teacher's labels); a task not named is unweighted.
        """
        weights = dict(sample_weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"loss: sample weights for tasks {unknown} that have no loss here (tasks: {self.tasks})")
        missing = [t for t in self.tasks if t not in outputs or t not in targets]
        if missing:
            raise ValueError(
                f"loss: tasks {missing} need both a model output and a target; outputs have {sorted(outputs)}, "
                f"targets have {sorted(targets)}"
            )
        raw = {}
        if "seg" in self.tasks:
            if self.class_weights is not None and self.class_weights.numel() != outputs["seg"].shape[1]:
                raise ValueError(
                    f"loss: {self.class_weights.numel()} class weights for {outputs['seg'].shape[1]} segmentation classes"
                )
            raw["seg"] = segmentation_loss(outputs["seg"], targets["seg"], self.ignore_index, self.class_weights,
                                           sample_weight=weights.get("seg"))
        if "depth" in self.tasks:
            raw["depth"] = depth_loss(outputs["depth"], targets["depth"], self.depth_loss, sample_weight=weights.get("depth"))
        if "normals" in self.tasks:
            raw["normals"] = normals_loss(outputs["normals"], targets["normals"], self.normals_loss,
                                          sample_weight=weights.get("normals"))
        return raw

    def combine(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weight the raw task losses and sum them: ``{"loss_<task>": weighted, "loss": sum}``."""
        weighted = self.weighting(raw)
        out = {f"loss_{t}": weighted[t] for t in self.tasks}
        out["loss"] = torch.stack(list(out.values())).sum()
        return out

    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                sample_weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return self.combine(self.task_losses(outputs, targets, sample_weights))
