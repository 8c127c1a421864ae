"""Tiny folder datasets whose true depth is known, and tiny ONNX teachers built from torch modules.

A frame's red channel holds its true inverse depth: ``1 / depth_m = INV_MIN + R / 255 * (INV_MAX -
INV_MIN)`` (depth 2..60 m), so a network that reads the red channel back from its normalised
input knows the exact inverse depth of every pixel. Its green channel is one grey level per frame
(``g``), which a relative teacher turns into a per-frame scale and shift; blue is texture.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch import nn

H, W = 24, 40
INV_MIN, INV_MAX = 1 / 60, 1 / 2
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def true_depth(red: np.ndarray) -> np.ndarray:
    return (1.0 / (INV_MIN + red.astype(np.float64) / 255.0 * (INV_MAX - INV_MIN))).astype(np.float32)


def scene(rng: np.random.Generator, g: int, h: int = H, w: int = W) -> np.ndarray:
    """An RGB frame: a ground that comes nearer towards the bottom, a box in front, sky-far top rows."""
    rows = np.linspace(10, 200, h)[:, None] * np.ones((1, w))
    red = rows.copy()
    y0, x0 = int(rng.integers(2, h // 2)), int(rng.integers(2, w // 2))
    red[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(120, 250)
    red = np.clip(red + rng.integers(0, 3, (h, w)), 0, 255).astype(np.uint8)
    rgb = np.stack([red, np.full((h, w), g, np.uint8), rng.integers(0, 256, (h, w)).astype(np.uint8)], axis=-1)
    return rgb


def write_png(path: Path, array: np.ndarray, rgb: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array[:, :, ::-1] if rgb else array)
    return path


def anchors_of(depth: np.ndarray, rng: np.random.Generator, share: float = 0.3, outliers: float = 0.25) -> np.ndarray:
    """Sparse LiDAR-like metric points: ``share`` of the pixels, ``outliers`` of them at random depths."""
    a = np.where(rng.random(depth.shape) < share, depth, 0).astype(np.float32)
    bad = (a > 0) & (rng.random(depth.shape) < outliers)
    a[bad] = rng.uniform(1.0, 90.0, int(bad.sum())).astype(np.float32)
    return a


def depth_png(depth_m: np.ndarray, scale: float = 256.0) -> np.ndarray:
    return np.clip(np.rint(depth_m * scale), 0, 65535).astype(np.uint16)


def make_dataset(root: Path, greys: list[int], classes=("road", "car", "person", "sky", "building"), split: str = "train",
                 anchored: list[bool] | None = None, seed: int = 0, extra_yaml: dict | None = None,
                 size: tuple[int, int] = (H, W)) -> dict[str, np.ndarray]:
    """``len(greys)`` frames ``f0..``; anchors for those ``anchored`` marks. Returns name -> true depth (m)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump({"classes": list(classes), **(extra_yaml or {})}))
    truth = {}
    for i, g in enumerate(greys):
        name = f"f{i}"
        rgb = scene(rng, g, *size)
        write_png(root / "images" / split / f"{name}.png", rgb, rgb=True)
        truth[name] = true_depth(rgb[:, :, 0])
        if anchored is None or anchored[i]:
            write_png(root / "depth" / split / f"{name}.png", depth_png(anchors_of(truth[name], rng)))
    return truth


def read_depth(path: Path, scale: float = 256.0) -> np.ndarray:
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert png is not None and png.dtype == np.uint16, path
    return png.astype(np.float32) / scale


def median_relative_error(pred: np.ndarray, truth: np.ndarray) -> float:
    ok = truth > 0
    return float(np.median(np.abs(pred[ok] - truth[ok]) / truth[ok]))


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return x * std + mean


class RelativeDepth(nn.Module):
    """``(5 + 20 g) / depth + 0.3 - 0.2 g``: an affine map of the true inverse depth whose scale and
    shift change with the frame's green level ``g`` (0..1), as a relative network's do per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = unnormalise(x)
        inv = INV_MIN + rgb[:, :1] * (INV_MAX - INV_MIN)
        g = rgb[:, 1:2].mean(dim=(2, 3), keepdim=True)
        return (5.0 + 20.0 * g) * inv + (0.3 - 0.2 * g)


class MetricDepth(nn.Module):
    """Metres, from the red channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = unnormalise(x)
        return (1.0 / (INV_MIN + rgb[:, :1] * (INV_MAX - INV_MIN)))[:, 0]


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a[:, :1] + b[:, :1]


class TenClasses(nn.Module):
    """Ten class scores from the pixel's colour: a fixed random 1 x 1 convolution."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 10, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(10, 3, 1, 1, generator=gen) * 2.0)
            self.conv.bias.copy_(torch.randn(10, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def export(module: nn.Module, path: Path, inputs: int = 1, channels: int = 3) -> Path:
    """Export with a dynamic batch and size (the legacy exporter: dynamic axes by name)."""
    args = tuple(torch.rand(2, channels, H, W) for _ in range(inputs))
    names = ["image"] if inputs == 1 else [f"image{i}" for i in range(inputs)]
    axes = {n: {0: "n", 2: "h", 3: "w"} for n in names}
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, input_names=names, output_names=["out"],
                          dynamic_axes=axes)
    return path
