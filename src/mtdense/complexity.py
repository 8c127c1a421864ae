"""Parameter and FLOP counts per model part (encoder, decoder, heads).

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a real forward
pass: convolutions and matrix products, one multiply-add = 2 FLOPs. Pooling, activations,
additions and interpolation are not counted (they are memory-bound, not FLOP-bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["PartStats", "model_complexity", "format_complexity"]


@dataclass
class PartStats:
    name: str
    params: int
    gflops: float


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def model_complexity(model: nn.Module, size: tuple[int, int] = (400, 1024), batch: int = 1) -> list[PartStats]:
    """Count parameters and GFLOPs of each part of a :class:`MultiTaskNet` at ``size``.

    Returns:
        Rows for ``encoder``, ``decoder``, ``heads`` and ``total``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, *size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def flops(part: str) -> float:
        if part == "heads":  # the ModuleDict itself is never called; its heads are
            return sum(flops(f"heads.{name}") for name in model.heads)
        return sum(counts.get(f"{root}.{part}", {}).values()) / 1e9

    rows = [PartStats(p, _params(getattr(model, p)), flops(p)) for p in ("encoder", "decoder", "heads")]
    total = sum(counts.get(root, {}).values()) / 1e9 if root in counts else sum(r.gflops for r in rows)
    rows.append(PartStats("total", _params(model), total))
    return rows


def format_complexity(rows: list[PartStats], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'part':<10}{'params':>14}{'GFLOPs':>10}")
    for r in rows:
        lines.append(f"{r.name:<10}{r.params:>14,}{r.gflops:>10.3f}")
    return "\n".join(lines)
