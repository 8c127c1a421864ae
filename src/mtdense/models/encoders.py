"""Encoders: a registry of backbones that all honour one feature contract.

Every encoder is an ``nn.Module`` whose ``forward(x)`` returns a list of feature maps ordered
from fine to coarse, and which publishes two lists of the same length:

* ``out_channels``: channels of each returned map;
* ``strides``: the reduction of each map relative to the input (4, 8, 16 or 32).

Several maps may share a stride (the MobileNetV3-Small taps take two blocks at 1/16 and two
at 1/32); the decoder sums the maps of one stride, so it only reads these two lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from mtdense.models.weights import load_state_dict_file

__all__ = ["Encoder", "TorchvisionEncoder", "TimmEncoder", "ENCODERS", "create_encoder", "available_encoders"]

Pretrained = bool | str | Path


class Encoder(nn.Module):
    """Base class: subclasses set ``out_channels`` and ``strides`` and implement ``forward``."""

    out_channels: list[int]
    strides: list[int]


class TorchvisionEncoder(Encoder):
    """Taps chosen blocks of a torchvision ``features`` stack.

    Args:
        features: The ``features`` ``nn.Sequential`` of a torchvision MobileNet.
        taps: Indices into ``features`` whose outputs are returned.
        out_channels: Channels of each tapped block.
        strides: Reduction of each tapped block.
    """

    def __init__(self, features: nn.Sequential, taps: Sequence[int], out_channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        last = max(taps)
        # Blocks after the last tap (e.g. the 576-channel 1x1 conv) are dropped: never used.
        self.features = nn.Sequential(*list(features.children())[: last + 1])
        self.taps = list(taps)
        self.out_channels = list(out_channels)
        self.strides = list(strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        taps = set(self.taps)
        for i, block in enumerate(self.features):
            x = block(x)
            if i in taps:
                outs.append(x)
        return outs


# name -> (torchvision builder, ImageNet weights enum, taps, channels, strides)
_TV_SPECS: dict[str, tuple[Callable[..., nn.Module], object, list[int], list[int], list[int]]] = {
    "mobilenet_v3_small": (
        tvm.mobilenet_v3_small,
        tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
        [1, 3, 7, 8, 10, 11],
        [16, 24, 48, 48, 96, 96],
        [4, 8, 16, 16, 32, 32],
    ),
    "mobilenet_v3_large": (
        tvm.mobilenet_v3_large,
        tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        [3, 6, 12, 15],
        [24, 40, 112, 160],
        [4, 8, 16, 32],
    ),
    "mobilenet_v2": (
        tvm.mobilenet_v2,
        tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
        [3, 6, 13, 17],
        [24, 32, 96, 320],
        [4, 8, 16, 32],
    ),
}


def _build_torchvision(name: str, pretrained: Pretrained) -> TorchvisionEncoder:
    builder, weights, taps, channels, strides = _TV_SPECS[name]
    if pretrained is True:
        try:
            net = builder(weights=weights)
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            raise RuntimeError(
                f"Could not fetch the torchvision ImageNet weights {weights} for encoder '{name}': {exc}.\n"
                f"Fix: run where the internet is reachable once (torchvision caches the file under "
                f"{torch.hub.get_dir()}/checkpoints), or save the weights elsewhere with "
                f"`torch.save(torchvision.models.{builder.__name__}(weights='DEFAULT').state_dict(), 'enc.pth')` "
                f"and pass pretrained='enc.pth', or use pretrained=False."
            ) from exc
    else:
        net = builder(weights=None)
        if pretrained:  # a local path
            state = load_state_dict_file(pretrained)
            fix = f"Save it with torch.save(torchvision.models.{name}().state_dict(), path)."
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches: weights of another architecture
                first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
                raise ValueError(f"{pretrained}: not a state dict of torchvision {name} ({first}). {fix}") from exc
            missing = [k for k in missing if k.startswith("features.")]
            if missing or not any(k.startswith("features.") for k in state):
                raise ValueError(
                    f"{pretrained}: not a state dict of torchvision {name} "
                    f"(missing {len(missing)} encoder keys, e.g. {missing[:3]}; unexpected e.g. {list(unexpected)[:3]}). {fix}"
                )
    return TorchvisionEncoder(net.features, taps, channels, strides)


class TimmEncoder(Encoder):
    """Any timm model that supports ``features_only``, tapped at strides 4, 8, 16 and 32."""

    def __init__(self, model_name: str, pretrained: Pretrained = False):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise ImportError(
                f"Encoder 'timm:{model_name}' needs timm: pip install 'mtdense[timm]'"
            ) from exc
        probe = timm.create_model(model_name, features_only=True, pretrained=False)
        reductions = probe.feature_info.reduction()
        wanted = [4, 8, 16, 32]
        # Last feature of each wanted stride.
        idx = [max(i for i, r in enumerate(reductions) if r == s) for s in wanted if s in reductions]
        if len(idx) != 4:
            raise ValueError(f"timm model '{model_name}' does not emit features at strides {wanted} (it has {reductions}).")
        kwargs = {}
        if isinstance(pretrained, (str, Path)):
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained)}
        self.model = timm.create_model(
            model_name, features_only=True, out_indices=idx, pretrained=bool(pretrained), **kwargs
        )
        self.out_channels = list(self.model.feature_info.channels())
        self.strides = list(self.model.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


ENCODERS: dict[str, Callable[[Pretrained], Encoder]] = {
    name: (lambda pretrained, _n=name: _build_torchvision(_n, pretrained)) for name in _TV_SPECS
}


def available_encoders() -> list[str]:
    """Names accepted by :func:`create_encoder` (plus any ``timm:<name>``)."""
    return sorted(ENCODERS) + ["timm:<any timm model with features_only>"]


def create_encoder(name: str, pretrained: Pretrained = False) -> Encoder:
    """Build an encoder by name.

    Args:
        name: A registered name (see :func:`available_encoders`) or ``"timm:<model>"``.
        pretrained: ``False`` for random init, ``True`` for ImageNet weights, or a path to a
            local ``.pth``/``.safetensors`` state dict of the backbone.
    """
    if name.startswith("timm:"):
        return TimmEncoder(name[len("timm:"):], pretrained)
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder '{name}'. Valid encoders: {', '.join(available_encoders())}.")
    return ENCODERS[name](pretrained)
