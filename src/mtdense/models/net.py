"""MultiTaskNet = encoder -> decoder -> one head per task."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtdense.models.decoders import LightWeightRefineNet
from mtdense.models.encoders import Encoder
from mtdense.models.heads import TaskHead

__all__ = ["MultiTaskNet", "UNIT_VECTOR_TASKS", "finish_output"]

UNIT_VECTOR_TASKS = ("normals",)
"""Tasks whose output is a direction: each pixel's vector is normalised to unit length, after the
upsampling (a bilinear blend of unit vectors is shorter than 1)."""


def finish_output(task: str, y: torch.Tensor) -> torch.Tensor:
    """A head's output at the input size as the task returns it: unit vectors for
    :data:`UNIT_VECTOR_TASKS` (``y / max(|y|, 1e-6)`` over the channels), as it is otherwise."""
    if task in UNIT_VECTOR_TASKS:
        return F.normalize(y, p=2.0, dim=1, eps=1e-6)
    return y


class MultiTaskNet(nn.Module):
    """Shared encoder and decoder with a head per task.

    Args:
        encoder: Any :class:`~mtdense.models.encoders.Encoder`.
        tasks: Task name -> output channels, e.g. ``{"seg": 19, "depth": 1}``.
        decoder_channels: Width of the Light-Weight RefineNet decoder.
        config: The plain-typed arguments that rebuild this model (saved with checkpoints).

    Attributes:
        dataset_info: The description of the data the model was trained on, as plain data
            (:meth:`mtdense.data.description.DatasetInfo.to_dict`: class names, colours, tasks),
            saved with checkpoints; ``None`` when unknown (read it with
            :func:`mtdense.data.description.model_dataset_info`, Cityscapes by default).

    ``forward(x)`` takes ``B x 3 x H x W`` ImageNet-normalised images (any H, W >= 32) and
    returns ``{task: B x C x H x W}`` at input resolution: segmentation logits, for depth the
    encoded target ``log(clip(depth_m, 0, 250)) / 5`` (see :mod:`mtdense.data.depth`), and for
    normals (3 channels) unit vectors in camera coordinates (:func:`finish_output`).
    """

    def __init__(self, encoder: Encoder, tasks: dict[str, int], decoder_channels: int = 256, config: dict[str, Any] | None = None):
        super().__init__()
        if not tasks:
            raise ValueError("tasks must name at least one task, e.g. {'seg': 19, 'depth': 1}")
        self.encoder = encoder
        self.decoder = LightWeightRefineNet(encoder.out_channels, encoder.strides, decoder_channels)
        self.heads = nn.ModuleDict({name: TaskHead(decoder_channels, c) for name, c in tasks.items()})
        self.tasks = dict(tasks)
        self.config = dict(config or {})
        self.dataset_info: dict[str, Any] | None = None

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop training the encoder: no gradients, and BatchNorm statistics kept fixed."""
        self.encoder_frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "MultiTaskNet":
        super().train(mode)
        if getattr(self, "encoder_frozen", False):
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            self._check_input(x)
        feats = self.encoder(x)
        shared = self.decoder(feats)
        size = x.shape[-2:]
        return {
            name: finish_output(name, F.interpolate(head(shared), size=size, mode="bilinear", align_corners=False))
            for name, head in self.heads.items()
        }

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor of shape B x 3 x H x W, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"expected a 4-D input B x 3 x H x W, got shape {tuple(x.shape)}; add a batch dim with x[None]")
        if x.shape[1] != 3:
            raise ValueError(f"expected 3 (RGB) channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"input too small: {tuple(x.shape[-2:])}; H and W must be at least 32 (stride-32 encoder)")
        if not x.is_floating_point():
            raise TypeError(f"expected a float, ImageNet-normalised input, got dtype {x.dtype}")
