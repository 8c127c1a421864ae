"""Light-Weight RefineNet decoder (Nekrasov et al., BMVC 2018), sized from the encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CRPBlock", "LightWeightRefineNet"]


def conv1x1(cin: int, cout: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=False, groups=groups)


class CRPBlock(nn.Module):
    """Chained Residual Pooling: ``top = conv1x1(maxpool5(top)); x = x + top``, ``n_stages`` times.

    Args:
        channels: Input and output channels.
        n_stages: Number of pool-conv stages (4 in the recipe).
        depthwise: Use depthwise 1x1 convs (the recipe does at the finest level).
    """

    def __init__(self, channels: int, n_stages: int = 4, depthwise: bool = False):
        super().__init__()
        groups = channels if depthwise else 1
        self.convs = nn.ModuleList(conv1x1(channels, channels, groups) for _ in range(n_stages))
        self.pool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x
        for conv in self.convs:
            top = conv(self.pool(top))
            x = x + top
        return x


class LightWeightRefineNet(nn.Module):
    """Fuse encoder features coarse-to-fine; output ``channels`` maps at the finest stride.

    Per level (coarsest first): sum the 1x1 projections of that level's features and the
    upsampled coarser result, ReLU6, CRP, then (except at the finest level) a 1x1 adapt conv
    and a bilinear upsample to the next finer level's size.

    Args:
        in_channels: ``encoder.out_channels`` (fine to coarse).
        strides: ``encoder.strides``; features sharing a stride form one level.
        channels: Decoder width (256 in the recipe).
        n_stages: CRP stages.
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], channels: int = 256, n_stages: int = 4):
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"in_channels {list(in_channels)} and strides {list(strides)} differ in length")
        if list(strides) != sorted(strides):
            raise ValueError(f"encoder strides must be ordered fine to coarse, got {list(strides)}")
        self.level_strides = sorted(set(strides))
        # Indices of features per level, fine to coarse.
        self.level_members = [[i for i, s in enumerate(strides) if s == ls] for ls in self.level_strides]
        self.proj = nn.ModuleList(conv1x1(c, channels) for c in in_channels)
        n = len(self.level_strides)
        self.crp = nn.ModuleList(CRPBlock(channels, n_stages, depthwise=(lvl == 0)) for lvl in range(n))
        # adapt[lvl] for every level but the finest.
        self.adapt = nn.ModuleList(conv1x1(channels, channels) for _ in range(n - 1))
        self.out_channels = channels
        self.out_stride = self.level_strides[0]

    def refine(
        self, lvl: int, feats: Sequence[torch.Tensor], coarser: torch.Tensor | None,
        act: Callable[[torch.Tensor], torch.Tensor] = F.relu6,
    ) -> torch.Tensor:
        """One level without its adapt conv: the sum of the level's projections and the
        upsampled ``coarser`` result (``None`` at the coarsest level), ``act``, then CRP."""
        members = self.level_members[lvl]
        y = self.proj[members[0]](feats[members[0]])
        for i in members[1:]:
            y = y + self.proj[i](feats[i])
        if coarser is not None:
            y = y + F.interpolate(coarser, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return self.crp[lvl](act(y))

    def forward(
        self, feats: Sequence[torch.Tensor], act: Callable[[torch.Tensor], torch.Tensor] = F.relu6
    ) -> torch.Tensor:
        """Fuse the encoder features, coarse to fine; ``act`` is each level's ReLU6 (an export
        may substitute an equivalent form, see :class:`mtdense.deploy.rewrite.DeployNet`)."""
        x: torch.Tensor | None = None
        for lvl in reversed(range(len(self.level_strides))):
            y = self.refine(lvl, feats, x, act)
            x = self.adapt[lvl - 1](y) if lvl > 0 else y
        assert x is not None
        return x
