"""Parity: how closely a runtime's outputs match the PyTorch network's (fp32, CPU) on the same batch.

Every deploy form is checked this way: ``mtdense export`` on every export, ``mtdense bench`` on
every row, and the shared runtime tester in the tests.

    >>> print(runtime_parity(open_runtime("model.onnx"), model, images))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtdense.data.depth import decode_depth

__all__ = ["Parity", "compare_outputs", "runtime_parity"]


@dataclass
class Parity:
    """How closely one set of outputs matches a reference (e.g. ONNX Runtime vs PyTorch fp32).

    Attributes:
        seg_agreement: Fraction (0..1) of pixels whose segmentation argmax is the same.
        depth_max_abs_m: Largest absolute depth difference in metres.
        depth_mean_rel: Mean of ``|d - d_ref| / d_ref`` over all pixels (0.01 = 1%).
        depth_max_rel: Largest ``|d - d_ref| / d_ref``.
        logits_max_abs: Largest absolute difference of the segmentation logits.
        pixels: Pixels compared (over all images).
    """

    seg_agreement: float
    depth_max_abs_m: float
    depth_mean_rel: float
    depth_max_rel: float
    logits_max_abs: float
    pixels: int

    def ok(self, min_agreement: float = 0.99, max_mean_rel: float = 0.01) -> bool:
        """True when agreement >= ``min_agreement`` and mean relative depth change <= ``max_mean_rel``."""
        return self.seg_agreement >= min_agreement and self.depth_mean_rel <= max_mean_rel

    def __str__(self) -> str:
        return (
            f"seg argmax agreement {100 * self.seg_agreement:.3f}% | depth: max |diff| {self.depth_max_abs_m:.4g} m, "
            f"mean rel {100 * self.depth_mean_rel:.4f}%, max rel {100 * self.depth_max_rel:.4f}% | "
            f"max |logit diff| {self.logits_max_abs:.3g} | {self.pixels:,} px"
        )


def compare_outputs(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> Parity:
    """Compare raw network outputs (``seg`` logits, ``depth`` encoded) against a reference.

    Args:
        out, ref: ``{"seg": B x C x H x W, "depth": B x 1 x H x W}`` arrays or tensors.
    """
    a = {k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for k, v in out.items()}
    b = {k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for k, v in ref.items()}
    for k in ("seg", "depth"):
        if k not in a or k not in b:
            raise ValueError(f"compare_outputs needs 'seg' and 'depth' in both, got {sorted(a)} and {sorted(b)}")
        if a[k].shape != b[k].shape:
            raise ValueError(f"output '{k}' shapes differ: {a[k].shape} vs {b[k].shape}")
    agree = float((a["seg"].argmax(1) == b["seg"].argmax(1)).mean())
    da, db = decode_depth(a["depth"]), decode_depth(b["depth"])  # float64, metres
    rel = np.abs(da - db) / db
    return Parity(
        seg_agreement=agree,
        depth_max_abs_m=float(np.abs(da - db).max()),
        depth_mean_rel=float(rel.mean()),
        depth_max_rel=float(rel.max()),
        logits_max_abs=float(np.abs(a["seg"] - b["seg"]).max()),
        pixels=int(a["depth"][:, 0].size),
    )


@torch.no_grad()
def runtime_parity(runtime, model: nn.Module, images: torch.Tensor | np.ndarray) -> Parity:
    """Compare a runtime's outputs with the PyTorch model's (fp32, CPU) on the same batch.

    Args:
        runtime: Anything called as ``runtime(batch) -> {task: tensor or array}`` (a
            :class:`~mtdense.deploy.runtime.Runtime`); it gets one image at a time, so a
            fixed-batch export takes part too.
        model: The PyTorch model it came from (a ``MultiTaskNet``: dict outputs).
        images: ``B x 3 x H x W`` ImageNet-normalised batch.
    """
    x = torch.as_tensor(images, dtype=torch.float32)
    model = copy.deepcopy(model).cpu().eval()
    ref = {k: v.numpy() for k, v in model(x).items()}
    runs = [runtime(x[i : i + 1]) for i in range(len(x))]
    out = {k: np.concatenate([np.asarray(torch.as_tensor(r[k]).cpu()) for r in runs]) for k in runs[0]}
    return compare_outputs(out, ref)
