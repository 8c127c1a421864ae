"""Task heads: depthwise 1x1 -> ReLU6 -> 3x3 conv with bias (Nekrasov et al., ICRA 2019)."""

from __future__ import annotations

from torch import nn

__all__ = ["TaskHead"]


class TaskHead(nn.Sequential):
    """One task head.

    Args:
        in_channels: Decoder channels.
        out_channels: Task outputs (19 logits for Cityscapes segmentation, 1 for depth).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size=1, groups=in_channels, bias=False),
            nn.ReLU6(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True),
        )
