"""The LightningModule: what is particular to multi-task dense prediction, nothing else.

Lightning owns the loop, devices, precision, checkpoints and logging. This module holds the
network (``self.model``, so checkpoint weights sit under the ``model.`` prefix that
:func:`mtdense.load_model` reads), the loss, the split-level metrics and the optimiser
(Adam + one-cycle cosine learning rate, stepped every optimiser step).

Logged: ``train/loss`` and, per task, ``train/loss_<task>`` (weighted term), ``train/raw_<task>``
(unweighted) and ``train/weight_<task>``; ``val/loss_<task>``; per validation epoch
``val/miou``, ``val/pixel_acc``, the depth errors ``val/abs_rel`` ... ``val/delta3`` and, with a
normals task, ``val/normal_mean`` ... ``val/normal_30`` (angular errors in degrees, shares).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from mtdense.data.depth import decode_depth, encode_depth
from mtdense.data.labels import IGNORE_INDEX
from mtdense.losses import TASKS as LOSS_TASKS
from mtdense.losses import MultiTaskLoss
from mtdense.metrics import DepthMetrics, NormalsMetrics, SegMetrics
from mtdense.models import create_model
from mtdense.train.config import validate
from mtdense.train.schema import LossConfig, OptimizerConfig, Recipe

__all__ = ["MultiTaskModule"]


class MultiTaskModule(L.LightningModule):
    """Trains a :class:`~mtdense.models.MultiTaskNet` on batches of the data pipeline.

    Build it from a recipe with :meth:`from_config`; the arguments are plain settings.

    Args:
        model_config: Arguments of :func:`mtdense.create_model` except ``pretrained``:
            ``encoder``, ``tasks``, ``decoder_channels``, ``freeze_encoder``. Saved in the
            checkpoint's ``hyper_parameters["model_config"]`` as the model's own ``config``.
        lr: Peak learning rate of the one-cycle schedule.
        loss_config: The loss (:class:`~mtdense.train.schema.LossConfig`, or its keys as a
            mapping, as in a checkpoint's hyper-parameters); ``class_weights`` must be numbers
            or ``None``. Default: the recipe defaults.
        optimizer_config: Adam and its schedule (:class:`~mtdense.train.schema.OptimizerConfig`
            or its keys as a mapping). Default: the recipe defaults.
        pretrained: Encoder initialisation for a fresh run (``True``: ImageNet, a path: local
            weights, ``False``: random). Not needed when weights are loaded afterwards.
        stage: Plain description of the stage being trained (saved, for the record).
        depth_init_m: Start the depth head's output bias at ``encode_depth(depth_init_m)``
            so a fresh network first predicts this typical depth (metres) everywhere instead
            of ``exp(0) = 1 m``; Adam moves a bias by about ``lr`` per step, so from random
            weights the offset alone would take hundreds of steps. ``None`` keeps the
            default initialisation.
        bn_momentum: Momentum of every BatchNorm's running statistics while training.
            torchvision's MobileNetV3 uses 0.01 (statistics over ~100 steps), which lags far
            behind the weights of a short run from random init, so the evaluated network
            (running statistics) differs from the trained one (batch statistics); 0.1 tracks
            them. ``None`` keeps the model's own.
        channels_last: Keep the network and its input batches in NHWC memory format (faster
            convolutions on CPUs and tensor cores; the weights and outputs are the same).
        dataset_info: The description of the training data as plain data
            (:meth:`~mtdense.data.description.DatasetInfo.to_dict`); saved in the checkpoint's
            ``hyper_parameters["dataset_info"]`` and set as the network's ``dataset_info``.

    Batches are dicts: ``image`` ``B x 3 x H x W`` normalised, ``seg`` ``B x H x W`` int64
    (255 ignore), ``depth`` ``B x H x W`` metres (0 invalid), ``normals`` ``B x 3 x H x W`` unit
    vectors (all-zero: no label); training batches of a recipe with ``data.teacher_weight`` also
    ``label_weight`` (task -> ``B`` per-frame loss weights, lower where the label is a teacher's,
    see :class:`~mtdense.train.datamodule.LabelSources`).
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        lr: float,
        loss_config: LossConfig | dict[str, Any] | None = None,
        optimizer_config: OptimizerConfig | dict[str, Any] | None = None,
        pretrained: bool | str = False,
        stage: dict[str, Any] | None = None,
        depth_init_m: float | None = None,
        bn_momentum: float | None = None,
        channels_last: bool = False,
        dataset_info: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = create_model(**{**model_config, "pretrained": pretrained})
        self.model.dataset_info = None if dataset_info is None else dict(dataset_info)
        self.channels_last = bool(channels_last)
        self.loss_config = validate(LossConfig, loss_config or {}, source="loss_config")
        self.optimizer_config = validate(OptimizerConfig, optimizer_config or {}, source="optimizer_config")
        if bn_momentum is not None:
            if not 0 < bn_momentum <= 1:
                raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum!r}")
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = float(bn_momentum)
        if depth_init_m is not None:
            if "depth" not in self.model.tasks or not depth_init_m > 0:
                raise ValueError(f"depth_init_m={depth_init_m!r} needs a depth task and a depth > 0 metres")
            with torch.no_grad():
                self.model.heads["depth"][-1].bias.fill_(float(encode_depth(torch.tensor(float(depth_init_m)))))
        # hparams: plain types only, so checkpoints load with weights_only=True.
        self.save_hyperparameters(
            {
                "model_config": dict(self.model.config),
                "lr": float(lr),
                "loss_config": self.loss_config.model_dump(),
                "optimizer_config": self.optimizer_config.model_dump(),
                "stage": dict(stage or {}),
                "dataset_info": self.model.dataset_info,
            }
        )
        loss_tasks = [t for t in self.model.tasks if t in LOSS_TASKS]
        if len(loss_tasks) != len(self.model.tasks):
            extra = sorted(set(self.model.tasks) - set(loss_tasks))
            raise ValueError(f"model tasks {extra} have no training loss in mtdense.losses; train with tasks out of "
                             f"{', '.join(LOSS_TASKS)}")
        self.criterion = MultiTaskLoss.from_config(self.loss_config, tasks=loss_tasks)
        self.val_seg = SegMetrics(num_classes=self.model.tasks["seg"], ignore_index=IGNORE_INDEX) if "seg" in self.model.tasks else None
        self.val_depth = DepthMetrics() if "depth" in self.model.tasks else None
        self.val_normals = NormalsMetrics() if "normals" in self.model.tasks else None

    @classmethod
    def from_config(cls, recipe: Recipe, stage: dict[str, Any], fresh: bool = True,
                    dataset_info: dict[str, Any] | None = None) -> MultiTaskModule:
        """The module for one stage of a recipe.

        Args:
            recipe: The recipe; ``loss.class_weights`` resolved to numbers (not ``enet``).
            stage: The stage's record (``index``, ``name``, sizes, ...), saved in the checkpoint.
            fresh: The first stage of a new run: initialise from ``model.pretrained`` and
                ``model.depth_init_m`` (later stages load the previous stage's weights).
            dataset_info: The training data's description as plain data (saved with the weights).
        """
        m = recipe.model
        return cls(
            m.network(),
            lr=recipe.stages[stage["index"]].lr,
            loss_config=recipe.loss,
            optimizer_config=recipe.optimizer,
            pretrained=m.pretrained if fresh else False,
            stage=stage,
            depth_init_m=m.depth_init_m if fresh else None,
            bn_momentum=m.bn_momentum,
            channels_last=recipe.trainer.channels_last,
            dataset_info=dataset_info,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``B x 3 x H x W`` normalised images -> ``{task: B x C x H x W}`` (see MultiTaskNet)."""
        return self.model(x)

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        image = batch["image"]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        outputs = self.model(image)
        weights = {t: w for t, w in (batch.get("label_weight") or {}).items() if t in self.criterion.tasks}
        raw = self.criterion.task_losses(outputs, batch, weights or None)
        return outputs, raw, self.criterion.combine(raw)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        _, raw, losses = self._losses(batch)
        self.criterion.weighting.observe(raw)
        bs = batch["image"].shape[0]
        logs = {f"train/{k}": v.detach() for k, v in losses.items()}
        logs.update({f"train/raw_{t}": v.detach() for t, v in raw.items()})
        logs.update({f"train/weight_{t}": float(w) for t, w in self.criterion.weighting.weights().items()})
        self.log_dict(logs, batch_size=bs, prog_bar=False)
        self.log("loss", losses["loss"].detach(), batch_size=bs, prog_bar=True, logger=False)
        return losses["loss"]

    def on_train_epoch_end(self) -> None:
        self.criterion.weighting.end_epoch()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs, raw, _ = self._losses(batch)
        bs = batch["image"].shape[0]
        self.log_dict({f"val/loss_{t}": v for t, v in raw.items()}, batch_size=bs, sync_dist=True)
        if self.val_seg is not None:
            self.val_seg.update(outputs["seg"].argmax(1), batch["seg"])
        if self.val_depth is not None:
            self.val_depth.update(decode_depth(outputs["depth"][:, 0].float()), batch["depth"])
        if self.val_normals is not None:
            self.val_normals.update(outputs["normals"].float(), batch["normals"])

    def on_validation_epoch_end(self) -> None:
        # compute() reduces the sums over all processes, so every rank logs the split figure.
        logs: dict[str, torch.Tensor] = {}
        if self.val_seg is not None:
            seg = self.val_seg.compute()
            logs["val/miou"] = seg["miou"].float()
            logs["val/pixel_acc"] = seg["pixel_acc"].float()
            self.val_seg.reset()
        if self.val_depth is not None:
            logs.update({f"val/{k}": v.float() for k, v in self.val_depth.compute().items()})
            self.val_depth.reset()
        if self.val_normals is not None:
            logs.update({f"val/{k}": v.float() for k, v in self.val_normals.compute().items()})
            self.val_normals.reset()
        self.log_dict(logs, prog_bar=False)
        if "val/miou" in logs:
            self.log("miou", logs["val/miou"], prog_bar=True, logger=False)

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam over the trainable parameters (network and learned loss weights) + OneCycleLR (cosine, per step)."""
        oc = self.optimizer_config
        params = [p for p in self.parameters() if p.requires_grad]
        # the fused kernel (one pass over all parameters) where the device has one: same update, fewer passes
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        optimizer = torch.optim.Adam(
            params, lr=self.hparams.lr, betas=(oc.betas[0], oc.betas[1]), weight_decay=oc.weight_decay, fused=fused or None,
        )
        total = int(self.trainer.estimated_stepping_batches)
        if total < 1:
            raise ValueError(f"the stage has {total} optimiser steps; raise epochs or limit_train_batches, or add training data")
        if float(oc.pct_start * total) - 1 == 0:  # OneCycleLR divides by the warm-up's length minus one step
            raise ValueError(f"the stage has {total} optimiser steps and optimizer.pct_start={oc.pct_start:g} makes its "
                             f"warm-up exactly one step, which the one-cycle schedule cannot divide; change the epochs, "
                             f"the batch size or optimizer.pct_start")
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=total,
            pct_start=oc.pct_start,
            anneal_strategy="cos",
            div_factor=oc.div_factor,
            final_div_factor=oc.final_div_factor,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
