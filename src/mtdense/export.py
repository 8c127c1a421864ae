"""Export for deployment: ONNX (fp32, or int8 with static QDQ quantization) and safetensors.

The ONNX graph takes ``image``: ``B x 3 x H x W`` float32 ImageNet-normalised RGB (batch,
height and width dynamic; H, W >= 32) and returns one output per task at the input size:
``seg`` (``B x 19 x H x W`` logits) and ``depth`` (``B x 1 x H x W``, encoded as
``log(depth_m) / 5``; metres = ``exp(5 * depth)``).

By default the exported graph is :class:`DeployNet`: the same weights and the same
function as the trained :class:`~mtdense.models.MultiTaskNet`, rewritten so that ONNX
Runtime's CPU kernels do less work (see its docstring). :func:`onnx_parity` checks the
exported file against PyTorch; ``mtdense export`` runs it on every export.

The same ONNX file converts to OpenVINO IR (``.xml`` + ``.bin``, fp32 weights) for a second
CPU runtime (:func:`export_openvino`, :class:`OpenVINORunner`, :func:`openvino_parity`; needs
``pip install "mtdense[openvino]"``).

    >>> model = mtdense.load_model("model.pth")
    >>> path = export_onnx(model, "model.onnx")
    >>> print(onnx_parity(path, model, sample_images))
    >>> quantize_onnx(path, "model.int8.onnx", calibration_images("val_images/"))
    >>> xml = export_openvino(path, "model.xml")
    >>> print(openvino_parity(xml, model, sample_images))
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtdense.models import MultiTaskNet, export_safetensors

__all__ = [
    "DeployNet", "TapConv3x3", "SplitConv3x3", "SeparableMaxPool2d", "same_maxpool_size", "deploy_head_conv", "deploy_groups", "fold_batchnorm", "export_onnx", "export_safetensors", "ort_session", "run_onnx",
    "Parity", "compare_outputs", "onnx_parity", "quantize_onnx", "ImageCalibrationReader", "calibration_images",
    "preprocess_images", "INT8_FP32_SCOPES", "IMAGE_SUFFIXES", "openvino_available", "export_openvino", "OpenVINORunner",
    "openvino_parity",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
# Module scopes kept in fp32 by default in the int8 model: the last (3x3) conv of each head.
# Their outputs are the logits and the log-depth; 8-bit steps there cost more accuracy
# (a 1.25-wide log-depth range in 255 steps is already ~2.5% relative depth) than time.
INT8_FP32_SCOPES = ("heads.*.2",)


# -- the deployment graph --------------------------------------------------------------------
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


def _is_task_head(head: nn.Module) -> bool:
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

    Every change is exact (equal up to float rounding, checked by :func:`onnx_parity`):

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
            tap_heads and all(_is_task_head(h) and h[0].in_channels == channels for h in self.heads.values())
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
        return tuple(F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs)

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


class _NamedOutputs(nn.Module):
    """Wrap a ``MultiTaskNet`` so it returns a tuple in task order (ONNX outputs are positional)."""

    def __init__(self, model: MultiTaskNet):
        super().__init__()
        self.model = model
        self.task_names = list(model.heads)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[t] for t in self.task_names)


def export_onnx(
    model: MultiTaskNet,
    path: str | Path,
    size: tuple[int, int] = (400, 1024),
    deploy: bool = True,
    opset: int = 18,
    dynamic: bool = True,
    groups: int | None = None,
) -> Path:
    """Export ``model`` to a single ONNX file with the ``torch.export``-based (dynamo) exporter.

    Args:
        model: A :class:`~mtdense.models.MultiTaskNet` (or a model with ``heads`` whose forward
            returns a dict of task outputs); exported in eval mode on the CPU, not modified.
        path: Output ``.onnx`` file (weights inside, no external data file).
        size: ``(H, W)`` of the example input used for tracing.
        deploy: Export :class:`DeployNet` (same outputs, faster under ONNX Runtime) instead
            of the training graph as is.
        opset: ONNX opset.
        dynamic: Batch, height and width dynamic (else fixed to ``1 x 3 x H x W``).
        groups: :class:`DeployNet`'s channel groups at the finest level (``None``: automatic;
            ``1`` for a graph that :func:`quantize_onnx` will quantize).

    Returns:
        ``path``. The model config and output encodings are stored in the file's metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().eval()
    net: nn.Module = DeployNet(model, groups=groups) if deploy else _NamedOutputs(model)
    names = list(net.task_names)
    x = torch.zeros(1, 3, *size)
    dynamic_shapes = None
    if dynamic:
        dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=32), 3: torch.export.Dim("width", min=32)}
        dynamic_shapes = {"x": dims}
    chatter = io.StringIO()  # the exporter prints progress lines; errors still raise
    with torch.no_grad(), contextlib.redirect_stdout(chatter):
        program = torch.onnx.export(
            net, (x,), None, dynamo=True, opset_version=opset, input_names=["image"], output_names=names,
            dynamic_shapes=dynamic_shapes, verbose=False,
        )
    program.optimize()
    meta = {
        "mtdense.config": json.dumps(getattr(model, "config", {})),
        "mtdense.input": "image: B x 3 x H x W float32, RGB scaled to 0..1 then ImageNet mean/std normalised",
        "mtdense.outputs": json.dumps({t: ("logits over Cityscapes train ids" if t == "seg" else "log(depth_m)/5" if t == "depth" else "raw") for t in names}),
        "mtdense.graph": "DeployNet" if deploy else "MultiTaskNet",
    }
    if deploy:
        meta["mtdense.deploy_groups"] = str(net.groups)
    program.model.metadata_props.update(meta)
    program.save(str(path), external_data=False)
    return path


def deploy_groups(path: str | Path) -> int:
    """The finest level's channel groups in an :func:`export_onnx` file (``1``: whole, or not a DeployNet)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return int(meta.get("mtdense.deploy_groups", "1"))


# -- running ONNX Runtime ---------------------------------------------------------------------
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def ort_session(
    path: str | Path,
    device: str = "cpu",
    threads: int | None = None,
    optimization: str = "all",
    profile_prefix: str | None = None,
    stop_spinning: bool = False,
):
    """Open an ONNX Runtime inference session.

    Args:
        path: ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda"`` (needs the onnxruntime-gpu package).
        threads: Intra-op threads; ``None`` lets ONNX Runtime choose (one per physical core).
        optimization: Graph optimisation level: ``disable``, ``basic``, ``extended`` or ``all``
            (``all`` adds the CPU's blocked NCHWc layout; the default).
        profile_prefix: Write an ORT JSON profile with this path prefix (``session.end_profiling()``).
        stop_spinning: Park the worker threads as soon as a run ends instead of letting them
            spin for the next run (``session.force_spinning_stop``): what a benchmark that
            alternates runtimes needs, so one runtime's idle threads do not hold the cores
            while the next one is timed.

    Returns:
        An ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if optimization not in _OPT_LEVELS:
        raise ValueError(f"optimization must be one of {sorted(_OPT_LEVELS)}, got {optimization!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[optimization])
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    if stop_spinning:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.log_severity_level = 3  # errors only; ORT's layout warnings are not actionable here
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"device 'cuda' needs onnxruntime-gpu; available providers: {ort.get_available_providers()}")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for corrupt files
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({exc}); re-export it with 'mtdense export'") from exc


def run_onnx(session, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Run a session on a ``B x 3 x H x W`` normalised batch; returns ``{output name: array}``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))


# -- parity ---------------------------------------------------------------------------------
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
    da, db = np.exp(5.0 * a["depth"]), np.exp(5.0 * b["depth"])  # encoded -> metres
    rel = np.abs(da - db) / db
    return Parity(
        seg_agreement=agree,
        depth_max_abs_m=float(np.abs(da - db).max()),
        depth_mean_rel=float(rel.mean()),
        depth_max_rel=float(rel.max()),
        logits_max_abs=float(np.abs(a["seg"] - b["seg"]).max()),
        pixels=int(a["depth"][:, 0].size),
    )


def onnx_parity(path: str | Path, model: nn.Module, images: torch.Tensor | np.ndarray, session=None) -> Parity:
    """Run ONNX Runtime and the PyTorch model (fp32, CPU) on the same batch and compare.

    Args:
        path: The exported ``.onnx`` file.
        model: The PyTorch model it came from (a ``MultiTaskNet``: dict outputs).
        images: ``B x 3 x H x W`` ImageNet-normalised batch.
        session: An open session for ``path`` (opened with defaults when ``None``).
    """
    session = session or ort_session(path)
    return _runtime_parity(lambda xi: run_onnx(session, xi), model, images)


@torch.no_grad()
def _runtime_parity(run: Callable[[torch.Tensor], dict[str, np.ndarray]], model: nn.Module,
                    images: torch.Tensor | np.ndarray) -> Parity:
    """Compare a runtime's outputs (``run`` on one image at a time) with the PyTorch model's (fp32, CPU)."""
    x = torch.as_tensor(images, dtype=torch.float32)
    model = copy.deepcopy(model).cpu().eval()
    ref = {k: v.numpy() for k, v in model(x).items()}
    # One image per run: a static export (fixed batch 1) takes nothing else.
    runs = [run(x[i : i + 1]) for i in range(len(x))]
    out = {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}
    return compare_outputs(out, ref)


# -- OpenVINO ---------------------------------------------------------------------------------
OPENVINO_INSTALL_HINT = 'pip install "mtdense[openvino]"'


def openvino_available() -> bool:
    """True when the ``openvino`` package is installed (it is an optional dependency)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise ImportError(f"OpenVINO is not installed; {OPENVINO_INSTALL_HINT} (or pip install 'openvino>=2024.0')") from exc
    return openvino


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX export (from :func:`export_onnx`) to OpenVINO IR with fp32 weights.

    ``openvino.convert_model`` reads the ONNX file, ``openvino.save_model`` writes ``xml_path``
    and the weights next to it (same stem, ``.bin``). Weights stay fp32 (``compress_to_fp16=False``;
    ``save_model`` stores them as fp16 by default, and depth must stay within 1% of fp32). The
    input/output names, dynamic dimensions and the file's ``mtdense.*`` metadata carry over (the
    metadata as the IR's runtime info under ``mtdense``).

    Returns:
        ``xml_path``.

    Raises:
        ImportError: OpenVINO is not installed (``pip install "mtdense[openvino]"``).
    """
    ov = _import_openvino()
    import onnx

    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if xml_path.suffix != ".xml":
        raise ValueError(f"OpenVINO IR is written as NAME.xml (+ NAME.bin), got {xml_path}")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov_model = ov.convert_model(onnx_path)
    for prop in onnx.load(str(onnx_path), load_external_data=False).metadata_props:
        if prop.key.startswith("mtdense."):
            ov_model.set_rt_info(prop.value, ["mtdense", prop.key.removeprefix("mtdense.")])
    ov.save_model(ov_model, xml_path, compress_to_fp16=False)
    return xml_path


class OpenVINORunner:
    """An OpenVINO IR (or ONNX file) compiled for the CPU, run on ``B x 3 x H x W`` batches.

    Compiled with ``Core().compile_model(path, "CPU", config)`` where ``config`` is the latency
    hint (one inference at a time, all threads on it), ``INFERENCE_NUM_THREADS`` when ``threads``
    is given, and ``INFERENCE_PRECISION_HINT = f32``: on CPUs with native bf16/fp16 (AMX, ...)
    the plugin would otherwise pick bf16/fp16 by itself (its default performance execution mode),
    which is no longer the fp32 path that the parity checks vouch for. One infer request is created
    and reused for every call.

    Calling it returns ``{output name: array}`` like :func:`run_onnx` (``seg``, ``depth``), so
    :func:`compare_outputs` applies.

    Args:
        path: ``.xml`` IR (from :func:`export_openvino`) or ``.onnx``.
        threads: Inference threads; ``None`` lets OpenVINO choose (the cores it may use).
        device: OpenVINO device name (``"CPU"``).

    Raises:
        ImportError: OpenVINO is not installed (``pip install "mtdense[openvino]"``).
    """

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "CPU"):
        ov = _import_openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {path}")
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.path = path
        self.compiled = ov.Core().compile_model(str(path), device, config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def __call__(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        # share_inputs: the request reads x in place (no copy); outputs are copied, so the
        # returned arrays stay valid after the next call.
        res = self.request.infer({0: x}, share_inputs=True)
        return {name: res[out] for name, out in zip(self.output_names, self.compiled.outputs)}


def openvino_parity(path: str | Path, model: nn.Module, images: torch.Tensor | np.ndarray, runner: OpenVINORunner | None = None) -> Parity:
    """Run OpenVINO (CPU, fp32) and the PyTorch model (fp32, CPU) on the same batch and compare.

    Args:
        path: The ``.xml`` IR from :func:`export_openvino`.
        model: The PyTorch model it came from (a ``MultiTaskNet``: dict outputs).
        images: ``B x 3 x H x W`` ImageNet-normalised batch.
        runner: An :class:`OpenVINORunner` for ``path`` (compiled with defaults when ``None``).
    """
    return _runtime_parity(runner or OpenVINORunner(path), model, images)


# -- int8 ------------------------------------------------------------------------------------
def calibration_images(folder: str | Path, limit: int = 64) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), at most ``limit``, evenly spread.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found for calibration")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def preprocess_images(images: Iterable[str | Path | np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Read (paths) / take (H x W x 3 uint8 RGB arrays) images, resize to ``size`` and normalise.

    Returns:
        ``N x 3 x H x W`` float32, ImageNet-normalised; unreadable files raise ``ValueError``.
    """
    from mtdense.inference import normalize_images, read_image

    rgbs = [read_image(im) if isinstance(im, (str, Path)) else im for im in images]
    return np.concatenate([normalize_images([rgb], size).numpy() for rgb in rgbs])


class ImageCalibrationReader:
    """Feeds calibration images, one at a time, to ``onnxruntime.quantization.quantize_static``.

    Implements ``onnxruntime.quantization.CalibrationDataReader`` (``get_next`` returns an
    input dict, then ``None`` when exhausted; ``rewind`` starts over).

    Args:
        images: Paths or H x W x 3 uint8 RGB arrays.
        size: ``(H, W)`` the model will run at (calibration ranges depend on it a little).
        input_name: The ONNX input name.
    """

    def __init__(self, images: Sequence[str | Path | np.ndarray], size: tuple[int, int], input_name: str = "image"):
        if not images:
            raise ValueError("ImageCalibrationReader needs at least one image")
        self.images = list(images)
        self.size = size
        self.input_name = input_name
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.images):
            return None
        x = preprocess_images([self.images[self._i]], self.size)
        self._i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self.images)


def _scope_matches(node, patterns: Sequence[str]) -> bool:
    import fnmatch

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(prop.value.replace("'", '"'))
            except ValueError:
                return False
            # name_scopes lists the module path from the root; the DeployNet root has no prefix.
            return any(fnmatch.fnmatch(s, p) or fnmatch.fnmatch(s, f"*.{p}") for s in scopes for p in patterns)
    return False


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    images: Sequence[str | Path | np.ndarray],
    size: tuple[int, int] = (400, 1024),
    per_channel: bool = True,
    fp32_scopes: Sequence[str] = INT8_FP32_SCOPES,
) -> Path:
    """Static int8 quantization (QDQ format) calibrated on real images.

    Activations are uint8 (asymmetric, min/max calibration), weights int8 per output channel
    (``per_channel``), the format ONNX Runtime's CPU kernels (VNNI / AVX2 / NEON) run fastest.
    Nodes whose PyTorch module path matches one of ``fp32_scopes`` (``fnmatch`` patterns over
    module names, e.g. ``heads.*.2``) stay in fp32, as do the final resizes to input size.

    Args:
        fp32_path: An fp32 model from :func:`export_onnx` with ``groups=1`` (or ``deploy=False``).
        out_path: Output ``.onnx``.
        images: Calibration images (paths or RGB uint8 arrays); 20..100 typical.
        size: ``(H, W)`` to calibrate at.
        per_channel: Per-output-channel weight scales (much more accurate for depthwise convs).
        fp32_scopes: Module-path patterns left unquantized.

    Returns:
        ``out_path``.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"fp32 ONNX model not found: {fp32_path}")
    groups = deploy_groups(fp32_path)
    if groups != 1:
        raise ValueError(
            f"{fp32_path} is a DeployNet export with a grouped finest level ({groups} groups), whose head convolutions "
            "cannot be kept in fp32 by module path; quantize an export made with export_onnx(..., groups=1)"
        )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mtdense-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + ORT basic graph optimisation before inserting Q/DQ (ORT's advice);
        # symbolic shape inference gives up on the dynamic upsampling sizes, ONNX's does not.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # Module scopes live in the exported file's node metadata, which pre-processing drops;
        # node names survive it.
        source = onnx.load(str(fp32_path), load_external_data=False)
        exclude = [n.name for n in source.graph.node if _scope_matches(n, fp32_scopes)]
        graph = onnx.load(str(pre))
        outputs = {x.name for x in graph.graph.output}
        exclude += [n.name for n in graph.graph.node if n.op_type == "Resize" and outputs & set(n.output)]
        reader = ImageCalibrationReader(images, size, graph.graph.input[0].name)
        quantize_static(
            str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    return out_path
