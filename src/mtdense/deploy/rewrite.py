"""The inference rewrite of the network: :class:`DeployNet`, the same weights and the same function
as the trained :class:`~mtdense.models.MultiTaskNet`, with less work for a CPU runtime
(BatchNorm folded, separable max-pools, cheaper head convolutions, layout-friendly ReLU6, the
finest level in cache-sized channel groups). Every change is exact up to float rounding; the
parity checks (:mod:`mtdense.deploy.parity`) hold each deploy form to it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mtdense.models import MultiTaskNet
from mtdense.models.net import finish_output

__all__ = [
    "DeployNet", "NamedOutputs", "TapConv3x3", "SplitConv3x3", "SeparableMaxPool2d", "same_maxpool_size", "deploy_head_conv",
    "fold_batchnorm", "is_task_head",
]


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every ``Conv2d -> BatchNorm2d`` pair inside ``nn.Sequential`` containers, in place.

    The BatchNorm becomes ``nn.Identity`` and its affine map moves into the convolution's
    weight and bias (exact up to float rounding). Only valid in eval mode.

    Returns:
        ``module``.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first): training BN uses batch statistics")
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        names = list(child._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = child._modules[a], child._modules[b]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                child._modules[a] = fuse_conv_bn_eval(conv, bn)
                child._modules[b] = nn.Identity()
    return module


def _tap_weights(w: torch.Tensor) -> torch.Tensor:
    """``C x Cin x 3 x 3`` -> ``9C x Cin x 1 x 1``: output ``o * 9 + t`` holds tap ``t`` (row-major
    in the 3x3 window) of output ``o``."""
    c, cin = w.shape[:2]
    return w.permute(0, 2, 3, 1).reshape(9 * c, cin, 1, 1)


def _one_hot_gather(c: int, dtype: torch.dtype) -> torch.Tensor:
    """``C x 9 x 3 x 3`` one-hot kernels: with ``groups=C`` and padding 1 they shift each output's
    9 tap maps into place and sum them."""
    onehot = torch.zeros(c, 9, 3, 3, dtype=dtype)
    for t in range(9):
        onehot[:, t, t // 3, t % 3] = 1.0
    return onehot


class TapConv3x3(nn.Module):
    """A 3x3 convolution (padding 1) computed as a 1x1 convolution to ``9 C`` per-tap maps
    followed by a shift-and-sum (a grouped 3x3 convolution with one-hot kernels).

    ``conv3x3(x)[o] = sum_t shift_t(W[o, :, t] . x)``: exact, since the 1x1 convolution has no
    bias and maps the zero padding to zero. For few output channels ``C`` it is much cheaper:
    the costly part (over all input channels) shrinks from ``9 Cin C`` to ``Cin 9C`` multiply-
    adds *after* the CPU kernels pad ``C`` up to their 16-channel block (``C = 1`` depth: 9x).

    Args:
        conv: A ``Conv2d`` with kernel 3, padding 1, stride 1, dilation 1, groups 1.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError(f"TapConv3x3 needs a plain 3x3 conv with padding 1, got {conv}")
        c, cin = conv.out_channels, conv.in_channels
        w = conv.weight.detach()  # C x Cin x 3 x 3
        self.proj = nn.Conv2d(cin, 9 * c, 1, bias=False)
        self.proj.weight.data.copy_(_tap_weights(w))
        self.gather = nn.Conv2d(9 * c, c, 3, padding=1, groups=c, bias=conv.bias is not None)
        self.gather.weight.data.copy_(_one_hot_gather(c, w.dtype))
        self.gather.weight.requires_grad_(False)
        if conv.bias is not None:
            self.gather.bias.data.copy_(conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gather(self.proj(x))


def _padded(n: int, block: int = 16) -> int:
    return -(-n // block) * block


def _tap_pays_off(c: int) -> bool:
    # Direct: 9 taps x padded(C) outputs per input channel; taps: padded(9 C), plus the gather.
    return 2 * _padded(9 * c) <= 9 * _padded(c)


class SplitConv3x3(nn.Module):
    """A 3x3 convolution whose first ``C - r`` outputs (a multiple of the CPU kernels' 16-channel
    block) are computed directly and whose last ``r`` by :class:`TapConv3x3`, concatenated.

    For the 19 segmentation logits: 16 direct + 3 by taps costs ``9 x 16 + 32`` instead of
    ``9 x 32`` multiply-adds per input channel and pixel (the direct kernel pads 19 to 32).
    """

    def __init__(self, conv: nn.Conv2d, tap_channels: int):
        super().__init__()
        c = conv.out_channels
        if not 0 < tap_channels < c:
            raise ValueError(f"tap_channels must be in 1..{c - 1}, got {tap_channels}")
        n = c - tap_channels
        self.direct = nn.Conv2d(conv.in_channels, n, 3, padding=1, bias=conv.bias is not None)
        self.direct.weight.data.copy_(conv.weight.detach()[:n])
        rest = nn.Conv2d(conv.in_channels, tap_channels, 3, padding=1, bias=conv.bias is not None)
        rest.weight.data.copy_(conv.weight.detach()[n:])
        if conv.bias is not None:
            self.direct.bias.data.copy_(conv.bias.detach()[:n])
            rest.bias.data.copy_(conv.bias.detach()[n:])
        self.taps = TapConv3x3(rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.direct(x), self.taps(x)], dim=1)


def _direct_outputs(c: int) -> int:
    """How many of a head 3x3 conv's ``c`` outputs to compute directly (the rest by taps)."""
    if _tap_pays_off(c):
        return 0
    r = c % 16
    if c > 16 and r and 9 * (c - r) + _padded(9 * r) < 9 * _padded(c) * 0.8:
        return c - r
    return c


def _plain_3x3(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1)


def deploy_head_conv(conv: nn.Conv2d) -> nn.Module:
    """The cheapest exact form of a head's 3x3 conv for 16-channel-blocked CPU kernels:
    :class:`TapConv3x3` for few outputs (depth: 1), :class:`SplitConv3x3` when the outputs
    overshoot a 16-channel block by a few (segmentation: 19 = 16 + 3), else ``conv`` itself."""
    if not _plain_3x3(conv):
        return conv
    n = _direct_outputs(conv.out_channels)
    if n == 0:
        return TapConv3x3(conv)
    if n < conv.out_channels:
        return SplitConv3x3(conv, conv.out_channels - n)
    return conv


class SeparableMaxPool2d(nn.Module):
    """A ``k x k`` max-pool (stride 1, padding ``k // 2``) as a ``1 x k`` then a ``k x 1`` pool.

    Bit-exact (a maximum over the window is the maximum of the row maxima; padding never wins),
    and ``2 k`` instead of ``k^2`` comparisons per output, which pays when the map is in cache.
    """

    def __init__(self, kernel_size: int = 5):
        super().__init__()
        k, p = kernel_size, kernel_size // 2
        self.rows = nn.MaxPool2d((1, k), stride=1, padding=(0, p))
        self.cols = nn.MaxPool2d((k, 1), stride=1, padding=(p, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cols(self.rows(x))

    @classmethod
    def replacing(cls, pool: nn.Module) -> nn.Module:
        """The separable form of a square, odd, stride-1, 'same'-padded ``nn.MaxPool2d``; any other module as is."""
        k = same_maxpool_size(pool)
        return cls(k) if k is not None and type(pool) is nn.MaxPool2d else pool


def same_maxpool_size(pool: nn.Module | None) -> int | None:
    """The window ``k`` of a square, odd, stride-1, 'same'-padded max-pool (``nn.MaxPool2d`` or
    :class:`SeparableMaxPool2d`), else ``None``."""
    if isinstance(pool, SeparableMaxPool2d):
        return pool.rows.kernel_size[1]
    if type(pool) is not nn.MaxPool2d or pool.ceil_mode:
        return None
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (k, k2), stride, pad, dil = pair(pool.kernel_size), pair(pool.stride), pair(pool.padding), pair(pool.dilation)
    if k != k2 or k % 2 == 0 or stride != (1, 1) or pad != (k // 2, k // 2) or dil != (1, 1):
        return None
    return k


def is_task_head(head: nn.Module) -> bool:
    """``depthwise 1x1 (no bias) -> ReLU6 -> plain 3x3 conv``: the form the grouped finest level needs."""
    if not isinstance(head, nn.Sequential) or len(head) != 3:
        return False
    dw, act, conv = head
    return (type(dw) is nn.Conv2d and dw.kernel_size == (1, 1) and dw.groups == dw.in_channels == dw.out_channels
            and dw.bias is None and type(act) is nn.ReLU6 and _plain_3x3(conv))


def _auto_groups(channels: int) -> int:
    # 32-channel groups: a 1/4-resolution map of one group (3.3 MB at 400 x 1024) and the few
    # that are alive with it stay in the last-level cache; smaller groups pay more per-node overhead.
    return channels // 32 if channels % 32 == 0 and channels >= 64 else 1


class DeployNet(nn.Module):
    """A :class:`~mtdense.models.MultiTaskNet` rewritten for inference; same function, less work.

    Every change is exact (equal up to float rounding, checked by :func:`~mtdense.deploy.parity.runtime_parity`):

    * BatchNorm folded into the preceding convolutions (:func:`fold_batchnorm`).
    * Every CRP max-pool is a :class:`SeparableMaxPool2d` (bit-exact, 10 instead of 25
      comparisons per output).
    * Each decoder level's ReLU6 is applied by a depthwise identity 1x1 conv with the clip fused
      (``relu6(conv(y, 1))``). ONNX Runtime's CPU provider runs convolutions, pooling and
      additions in a blocked channel layout (NCHWc) but not a stand-alone ``Clip``; a bare
      ReLU6 sends the whole Chained Residual Pooling sum back to plain NCHW.
    * The heads' 3x3 convs (256 channels in, at 1/4 resolution: a quarter of all FLOPs) stop
      paying for the CPU kernels' padding of outputs to 16-channel blocks: depth (1 output,
      padded to 16) becomes a 1x1 conv to 9 tap maps and a tiny shift-and-sum
      (:class:`TapConv3x3`); segmentation (19 outputs, padded to 32) becomes 16 direct
      outputs plus 3 by taps (:class:`SplitConv3x3`).
    * The finest level runs in ``groups`` channel groups. Everything there, from the level's
      input to the heads' ReLU6, acts on each channel alone (its CRP has depthwise convs, the
      heads start with depthwise convs), so group ``g`` needs only its rows of the projection and
      adapt convs and contributes a partial sum to each head's 3x3 conv. A group's maps (256 /
      ``groups`` channels at 1/4 resolution) stay in cache through the whole chain, where the
      full 256-channel maps (26 MB each at 400 x 1024) would stream from memory at every step.
      Only the summation order of the heads' convolutions changes.

    ``forward(x)`` returns a tuple of the task outputs in ``task_names`` order (what ONNX
    export names the outputs), each ``B x C x H x W`` at the input size.

    Args:
        model: The trained network; it is deep-copied, not modified.
        tap_heads: Rewrite the heads' 3x3 convs into direct and tap parts (see above).
        groups: Channel groups at the finest level: ``None`` picks 32-channel groups when the
            decoder width allows (8 for 256 channels), ``1`` keeps the level whole (the graph
            :func:`quantize_onnx` needs: its fp32 exclusions go by module path). Grouping needs
            the recipe's depthwise finest CRP and heads of the form
            ``depthwise 1x1 -> ReLU6 -> 3x3 conv``; otherwise the level stays whole.
    """

    def __init__(self, model: MultiTaskNet, tap_heads: bool = True, groups: int | None = None):
        super().__init__()
        model = fold_batchnorm(copy.deepcopy(model).eval())
        self.encoder = model.encoder
        self.decoder = model.decoder
        self.task_names = list(model.heads)
        self.heads = model.heads
        channels = self.decoder.out_channels
        for crp in self.decoder.crp:
            crp.pool = SeparableMaxPool2d.replacing(crp.pool)
        groupable = (
            tap_heads and all(is_task_head(h) and h[0].in_channels == channels for h in self.heads.values())
            and all(c.groups == channels for c in self.decoder.crp[0].convs)
        )
        if groups is None:
            groups = _auto_groups(channels) if groupable else 1
        if groups < 1 or channels % groups:
            raise ValueError(f"groups must divide the decoder width {channels}, got {groups}")
        if groups > 1 and not groupable:
            raise ValueError("grouping the finest level needs its depthwise CRP and heads of the form depthwise 1x1 -> ReLU6 -> 3x3 conv")
        self.groups = groups
        self.register_buffer("identity", torch.ones(channels, 1, 1, 1))
        self._direct: dict[str, int] = {}
        if groups > 1:
            for t, head in self.heads.items():
                conv = head[2]
                n = self._direct[t] = _direct_outputs(conv.out_channels)
                w = conv.weight.detach()
                # The tap part of the head conv, as in TapConv3x3, summed over groups before the gather.
                self.register_buffer(f"_taps_{t}", _tap_weights(w[n:]).clone())
                self.register_buffer(f"_gather_{t}", _one_hot_gather(conv.out_channels - n, w.dtype))
        elif tap_heads:
            for head in self.heads.values():
                if isinstance(head[-1], nn.Conv2d):
                    head[-1] = deploy_head_conv(head[-1])
        self.config = dict(getattr(model, "config", {}))
        self.tasks = dict(getattr(model, "tasks", {}))
        self.eval()

    def _relu6(self, y: torch.Tensor) -> torch.Tensor:
        return F.relu6(F.conv2d(y, self.identity[: y.shape[1]], groups=y.shape[1]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = x.shape[-2:]
        if self.groups == 1:
            top = self.decoder(self.encoder(x), act=self._relu6)
            outs = [self.heads[t](top) for t in self.task_names]
        else:
            outs = self._grouped(self.encoder(x))
        return tuple(finish_output(t, F.interpolate(o, size=size, mode="bilinear", align_corners=False))
                     for t, o in zip(self.task_names, outs))

    def coarse_levels(self, feats: list[torch.Tensor]) -> torch.Tensor | None:
        """Every decoder level but the finest: the CRP output of level 1 (the next coarser
        level), before the adapt conv into the finest level; ``None`` with a single level."""
        dec = self.decoder
        coarser = None
        for lvl in reversed(range(1, len(dec.level_strides))):
            y = dec.refine(lvl, feats, coarser, act=self._relu6)
            coarser = dec.adapt[lvl - 1](y) if lvl > 1 else y
        return coarser

    def _grouped(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        dec = self.decoder
        coarser = self.coarse_levels(feats)
        members = dec.level_members[0]
        size = feats[members[0]].shape[-2:]
        n = dec.out_channels // self.groups
        direct: dict[str, torch.Tensor | None] = dict.fromkeys(self.task_names)
        taps: dict[str, torch.Tensor | None] = dict.fromkeys(self.task_names)
        for g in range(self.groups):
            rows = slice(g * n, (g + 1) * n)
            y = F.conv2d(feats[members[0]], dec.proj[members[0]].weight[rows])
            for i in members[1:]:
                y = y + F.conv2d(feats[i], dec.proj[i].weight[rows])
            if coarser is not None:
                y = y + F.interpolate(F.conv2d(coarser, dec.adapt[0].weight[rows]), size=size, mode="bilinear", align_corners=False)
            a = top = self._relu6(y)
            for conv in dec.crp[0].convs:
                top = F.conv2d(dec.crp[0].pool(top), conv.weight[rows], groups=n)
                a = a + top
            for t in self.task_names:
                dw, _, conv = self.heads[t]
                h = F.relu6(F.conv2d(a, dw.weight[rows], groups=n))
                k = self._direct[t]
                if k:
                    d = F.conv2d(h, conv.weight[:k, rows], conv.bias[:k] if g == 0 and conv.bias is not None else None, padding=1)
                    direct[t] = d if direct[t] is None else direct[t] + d
                if k < conv.out_channels:
                    p = F.conv2d(h, getattr(self, f"_taps_{t}")[:, rows])
                    taps[t] = p if taps[t] is None else taps[t] + p
        outs = []
        for t in self.task_names:
            conv, k = self.heads[t][2], self._direct[t]
            parts = [direct[t]] if k else []
            if k < conv.out_channels:
                bias = conv.bias[k:] if conv.bias is not None else None
                parts.append(F.conv2d(taps[t], getattr(self, f"_gather_{t}"), bias, padding=1, groups=conv.out_channels - k))
            outs.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
        return outs


class NamedOutputs(nn.Module):
    """Wrap a ``MultiTaskNet`` so it returns a tuple in task order (ONNX outputs are positional)."""

    def __init__(self, model: MultiTaskNet):
        super().__init__()
        self.model = model
        self.task_names = list(model.heads)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[t] for t in self.task_names)
