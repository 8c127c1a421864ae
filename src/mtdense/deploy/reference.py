"""The write-up's architecture, as its public code builds it: the baseline for speed comparisons.

It is the recipe's network (same encoder taps, 256-channel Light-Weight RefineNet, same heads
and adapt convs, the same parameter names and shapes) except for one detail of the Chained
Residual Pooling block. Where the paper adds each stage's *convolved* map to the running sum,

    top = conv(pool(top)); x = x + top                       # paper, mtdense.models.CRPBlock

the write-up's code also adds the pooled map before convolving it:

    top = pool(top); x = x + top; top = conv(top); x = x + top   # write-up, ReferenceCRPBlock

so its outputs differ from :class:`~mtdense.models.MultiTaskNet` for the same weights, and it
does twice the additions on the largest maps. Any ``MultiTaskNet`` state dict loads into it
(and back), which lets ``mtdense bench`` time both networks on the same weights side by side.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mtdense.models import CRPBlock, MultiTaskNet, create_model

__all__ = ["ReferenceCRPBlock", "create_reference_model", "to_reference"]


class ReferenceCRPBlock(CRPBlock):
    """Chained Residual Pooling as the write-up's code computes it.

    ``top = pool(top); x = x + top; top = conv(top); x = x + top`` per stage; the parameters
    (``convs``) are those of :class:`~mtdense.models.CRPBlock`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x
        for conv in self.convs:
            top = self.pool(top)
            x = x + top
            top = conv(top)
            x = x + top
        return x


def _swap_crp(module: nn.Module) -> None:
    for child in module.children():
        if type(child) is CRPBlock:
            child.__class__ = ReferenceCRPBlock  # same submodules and parameters, other forward
        else:
            _swap_crp(child)


def to_reference(model: MultiTaskNet) -> MultiTaskNet:
    """A copy of ``model`` whose CRP blocks compute as the write-up's code does.

    Args:
        model: Any :class:`~mtdense.models.MultiTaskNet`; it is not modified.

    Returns:
        A deep copy with the same weights, in the same train/eval mode, whose every
        :class:`~mtdense.models.CRPBlock` is a :class:`ReferenceCRPBlock`. Its ``config``
        still describes (and rebuilds) the recipe's network, not the reference.
    """
    ref = copy.deepcopy(model)
    _swap_crp(ref)
    return ref


def create_reference_model(
    encoder: str = "mobilenet_v3_small",
    tasks: dict[str, int] | None = None,
    decoder_channels: int = 256,
) -> MultiTaskNet:
    """The write-up's network with random weights (load a ``MultiTaskNet`` state dict into it).

    Args:
        encoder: Encoder name, as for :func:`mtdense.create_model` (the write-up uses
            ``mobilenet_v3_small``).
        tasks: Task name -> output channels; default ``{"seg": 19, "depth": 1}``.
        decoder_channels: Decoder width (256 in the write-up).

    Returns:
        A :class:`~mtdense.models.MultiTaskNet` whose CRP blocks are :class:`ReferenceCRPBlock`.
    """
    return to_reference(create_model(encoder, tasks=tasks, decoder_channels=decoder_channels))
