"""Joint transforms: one random draw per sample, shared by the image, its segmentation, its depth
and its surface normals.

Built on ``torchvision.transforms.v2``: the image is a ``tv_tensors.Image``, the segmentation a
``tv_tensors.Mask``, the depth a :class:`DepthMap` and the normals a :class:`NormalsMap` (both
``Mask`` s), so every geometric op moves them together and resizes the maps with nearest
neighbour (no new label values, no depth or normal mixed across an object edge); colour jitter
and normalisation touch the image only. A horizontal flip mirrors the scene, so it also negates
the normals' x component (camera coordinates: x right, y down, z forward); crops and resizes
leave the vectors as they are. Resizing
never changes depth values: depth is in metres, and a resize scales the focal length and the
disparity alike. A random crop that is then enlarged is another matter: it magnifies the scene,
so objects look nearer than their depth says; ``zoom_depth=True`` divides the depth by the
magnification so that apparent size and depth stay consistent (see :class:`JointResizedCrop`).
Padding (a crop box reaching outside the image) is 0 for the image, 255
(ignore) for the segmentation and 0 (no value) for the depth and the normals.

Both transforms map a sample of :class:`mtdense.data.cityscapes.CityscapesDataset` to
``image`` float32 3 x H x W (ImageNet-normalised), ``seg`` int64 H x W, ``depth`` float32 H x W,
``normals`` float32 3 x H x W (where the sample has them; channels first, as the network's output)
and ``name``; the other keys (``camera``, ``paths``, ``right``) are dropped, since a crop or flip
would make them wrong, and the default ``DataLoader`` collate works on the result.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from mtdense.data.image import IMAGENET_MEAN, IMAGENET_STD
from mtdense.data.labels import IGNORE_INDEX, NUM_CLASSES

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_COLOR_JITTER",
    "DepthMap", "NormalsMap", "JointResizedCrop", "JointHorizontalFlip", "TrainTransform", "EvalTransform",
    "to_tv_tensors",
]

DEFAULT_COLOR_JITTER = (0.3, 0.3, 0.3, 0.05)
"""Brightness, contrast, saturation, hue of ``color_jitter=True``."""


class DepthMap(tv_tensors.Mask):
    """Depth in metres (0 = no value), ``1 x H x W`` float32: moved like a mask, padded with 0."""


class NormalsMap(tv_tensors.Mask):
    """Surface normals, ``3 x H x W`` float32 unit vectors in camera coordinates (x right, y down,
    z forward; all zero = no label): moved like a mask, padded with 0, x negated by a horizontal
    flip (:class:`JointHorizontalFlip`)."""


class JointHorizontalFlip(v2.RandomHorizontalFlip):
    """``v2.RandomHorizontalFlip`` (the same random draw) that also negates the x component of a
    :class:`NormalsMap`: a mirrored surface faces the mirrored way."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if isinstance(inpt, NormalsMap):
            sign = torch.tensor([-1.0, 1.0, 1.0], dtype=out.dtype, device=out.device)[:, None, None]
            out = tv_tensors.wrap(out * sign, like=inpt)
        return out


def _fill(inpt: torch.Tensor) -> float:
    if isinstance(inpt, (DepthMap, NormalsMap)):
        return 0.0
    if isinstance(inpt, tv_tensors.Mask):
        return float(IGNORE_INDEX)
    return 0.0


def _size_pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be (H, W) with H, W >= 1, got {size}")
    return pair  # type: ignore[return-value]


class JointResizedCrop(v2.Transform):
    """Crop a box from the image, seg and depth and resize it to ``size``; the box may reach
    outside the input (then the outside is padded: image 0, seg 255, depth 0).

    With ``random=True`` the box is drawn as in ``v2.RandomResizedCrop``: area a uniform share
    ``scale`` of the input's, aspect (W / H) log-uniform in ``ratio``, position uniform. An
    upper ``scale`` above 1 zooms out (the box may be larger than the input, and is padded);
    otherwise a box that does not fit is drawn again (10 tries), then the largest centred box
    of an allowed aspect is taken. With ``random=False`` the box is the whole input (a resize).

    Images are resized bilinearly with antialiasing, masks and depth with exact nearest
    neighbour (``nearest-exact``: the source pixel whose centre is nearest).

    A box of width ``w`` resized to the output width ``out_w`` shows the scene at
    ``out_w / w`` output pixels per input pixel. Evaluation shows it at ``ref_w / W`` (the
    whole input of width ``W`` resized to ``reference_width``; at its native size when
    ``reference_width`` is ``None``). The crop is thus magnified ``z = (out_w / w) / (ref_w / W)``
    times relative to what the network sees at evaluation: a car looks as large as one ``z``
    times nearer. With ``zoom_depth=True`` depth maps are divided by ``z``, so a network that
    judges distance by apparent size (as a monocular one must) is not taught contradictory
    depths for the same look; without it, crops of ``scale=(0.5, 1)`` blur the size-to-depth
    relation by up to 41%. Invalid depth (0) stays 0.

    Args:
        size: Output ``(H, W)``; ``None`` (with ``random=False`` only) keeps the input size.
        scale: Range of the box area relative to the input area.
        ratio: Range of the box aspect W / H (default: the aspect of ``size``, no distortion).
        random: Draw a box, or take the whole input.
        zoom_depth: Divide depth by the magnification ``z`` (see above).
        reference_width: Width the whole input is resized to at evaluation; ``None``: its
            native width (no resize). Only used with ``zoom_depth``.
    """

    def __init__(
        self,
        size: int | Sequence[int] | None,
        scale: tuple[float, float] = (1.0, 1.0),
        ratio: tuple[float, float] | None = None,
        random: bool = True,
        zoom_depth: bool = False,
        reference_width: int | None = None,
    ):
        super().__init__()
        self.zoom_depth = bool(zoom_depth)
        if reference_width is not None and not int(reference_width) >= 1:
            raise ValueError(f"reference_width must be a width in pixels >= 1 or None, got {reference_width}")
        self.reference_width = None if reference_width is None else int(reference_width)
        self.size = None if size is None else _size_pair(size, "size")
        if self.size is None and random:
            raise ValueError("a random crop needs an output size (H, W)")
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        self.scale = (lo, hi)
        if ratio is None:
            aspect = self.size[1] / self.size[0] if self.size else 1.0
            ratio = (aspect, aspect)
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio}")
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.random = random

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        if not self.random:
            return dict(top=0, left=0, height=height, width=width)
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        zoom_out = self.scale[1] > 1.0
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item()).item())
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if w >= 1 and h >= 1 and (zoom_out or (w <= width and h <= height)):
                top = int(torch.randint(min(0, height - h), max(0, height - h) + 1, (1,)).item())
                left = int(torch.randint(min(0, width - w), max(0, width - w) + 1, (1,)).item())
                return dict(top=top, left=left, height=h, width=w)
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        w, h = min(width, int(round(height * aspect))), min(height, int(round(width / aspect)))
        return dict(top=(height - h) // 2, left=(width - w) // 2, height=h, width=w)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, left, h, w = params["top"], params["left"], params["height"], params["width"]
        in_h, in_w = inpt.shape[-2:]
        if self.zoom_depth and isinstance(inpt, DepthMap):
            out_w = self.size[1] if self.size is not None else w
            ref = self.reference_width / in_w if self.reference_width is not None else 1.0
            zoom = (out_w / w) / ref
            if zoom != 1.0:
                inpt = tv_tensors.wrap(inpt / zoom, like=inpt)
        padding = [max(0, -left), max(0, -top), max(0, left + w - in_w), max(0, top + h - in_h)]
        if any(padding):
            inpt = self._call_kernel(F.pad, inpt, padding=padding, fill=_fill(inpt))
            top, left = top + padding[1], left + padding[0]
        if (top, left, h, w) != (0, 0, *inpt.shape[-2:]):
            inpt = self._call_kernel(F.crop, inpt, top=top, left=left, height=h, width=w)
        if self.size is not None and (h, w) != self.size:
            mask = isinstance(inpt, tv_tensors.Mask)
            interpolation = v2.InterpolationMode.NEAREST_EXACT if mask else v2.InterpolationMode.BILINEAR
            inpt = self._call_kernel(F.resize, inpt, size=list(self.size), interpolation=interpolation, antialias=True)
        return inpt


def _file(sample: dict[str, Any], role: str) -> str:
    paths = sample.get("paths") or {}
    return str(paths.get(role, sample.get("name", "the sample")))


def to_tv_tensors(sample: dict[str, Any], num_classes: int = NUM_CLASSES) -> dict[str, torch.Tensor]:
    """A dataset sample's ``image`` / ``seg`` / ``depth`` / ``normals`` as ``Image`` / ``Mask`` /
    :class:`DepthMap` / :class:`NormalsMap`.

    Non-finite or negative depths become 0 (invalid), a normal with a non-finite component all
    zero (no label); the sample stays usable.

    Args:
        sample: The dataset sample.
        num_classes: ``K``: seg values must be class indices ``0..K-1`` or 255 (default: the 19
            Cityscapes train ids).

    Raises:
        ValueError: The image is not H x W x 3 uint8, seg holds a value that is neither a class
            index nor 255, normals are not H x W x 3, or seg / depth / normals differ in size from
            the image (the message names the file).
    """
    image = np.asarray(sample["image"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{_file(sample, 'image')}: the image must be H x W x 3 uint8 RGB, got {image.dtype} {image.shape}")
    size = image.shape[:2]
    out = {"image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))}
    for key, role in (("seg", "label"), ("depth", "disparity")):
        if sample.get(key) is None:
            continue
        array = np.asarray(sample[key])
        if array.shape != size:
            raise ValueError(
                f"{_file(sample, role)}: {key} is {'x'.join(map(str, array.shape))} but the image "
                f"{_file(sample, 'image')} is {size[0]}x{size[1]}; the maps must have the image's size"
            )
        if key == "seg":
            if array.dtype.kind not in "iu":
                raise ValueError(f"{_file(sample, role)}: seg must hold integer train ids, got {array.dtype}")
            bad = ((array >= num_classes) & (array != IGNORE_INDEX)) | (array < 0)
            if bad.any():
                values = np.unique(array[bad])[:10].tolist()
                fix = ("map label ids with mtdense.data.labels.label_ids_to_train_ids" if num_classes == NUM_CLASSES
                       else "the model has that many classes; match model.tasks.seg to the dataset's classes")
                raise ValueError(f"{_file(sample, role)}: seg holds {values}, neither class indices 0..{num_classes - 1} "
                                 f"nor {IGNORE_INDEX}; {fix}")
            out["seg"] = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))[None])
        else:
            depth = np.asarray(array, dtype=np.float32)
            bad = ~(np.isfinite(depth) & (depth >= 0))
            if bad.any():
                depth = np.where(bad, np.float32(0), depth)
            out["depth"] = DepthMap(torch.from_numpy(np.ascontiguousarray(depth))[None])
    if sample.get("normals") is not None:
        normals = np.asarray(sample["normals"], dtype=np.float32)
        if normals.shape != (*size, 3):
            raise ValueError(f"{_file(sample, 'normals')}: normals are {'x'.join(map(str, normals.shape))} but the image "
                             f"{_file(sample, 'image')} is {size[0]}x{size[1]}; they must be H x W x 3 of the image's size")
        bad = ~np.isfinite(normals).all(axis=2)
        if bad.any():
            normals = np.where(bad[..., None], np.float32(0), normals)
        out["normals"] = NormalsMap(torch.from_numpy(np.ascontiguousarray(normals)).permute(2, 0, 1))
    return out


def _finish(tensors: dict[str, torch.Tensor], sample: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"image": tensors["image"].as_subclass(torch.Tensor)}
    if "seg" in tensors:
        out["seg"] = tensors["seg"][0].as_subclass(torch.Tensor).to(torch.int64)
    if "depth" in tensors:
        out["depth"] = tensors["depth"][0].as_subclass(torch.Tensor).to(torch.float32)
    if "normals" in tensors:
        out["normals"] = tensors["normals"].as_subclass(torch.Tensor).to(torch.float32).contiguous()
    if "name" in sample:
        out["name"] = sample["name"]
    return out


def _normalize() -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class TrainTransform:
    """Training augmentation: random resized crop, horizontal flip (normals' x negated), colour
    jitter (image only), ImageNet normalisation; one draw per sample for image, seg, depth and normals.

    Args:
        size: Output ``(H, W)`` (e.g. ``(200, 512)`` in the recipe's first stage).
        scale: Range of the crop area relative to the image area; an upper bound above 1 also
            zooms out, padding the outside (seg 255, depth 0).
        ratio: Range of the crop aspect W / H; default: the aspect of ``size`` (no distortion).
        color_jitter: ``True`` (:data:`DEFAULT_COLOR_JITTER`), ``False`` / ``None`` (none), or
            ``(brightness, contrast, saturation, hue)`` as in ``v2.ColorJitter``.
        hflip: Probability of a horizontal flip.
        zoom_depth: Divide depth by the crop's magnification relative to evaluation, so that
            apparent size and depth agree (see :class:`JointResizedCrop`).
        reference_width: Width images are resized to at evaluation (``None``: native).
        num_classes: Segmentation classes ``K`` (seg values ``0..K-1`` or 255); default 19.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] | None = None,
        color_jitter: bool | Sequence[float] | None = True,
        hflip: float = 0.5,
        zoom_depth: bool = False,
        reference_width: int | None = None,
        num_classes: int = NUM_CLASSES,
    ):
        self.size = _size_pair(size, "size")
        self.num_classes = int(num_classes)
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
        steps: list[v2.Transform] = [JointResizedCrop(self.size, scale=scale, ratio=ratio, random=True, zoom_depth=zoom_depth,
                                                       reference_width=reference_width)]
        if hflip > 0:
            steps.append(JointHorizontalFlip(p=hflip))
        if color_jitter is True:
            color_jitter = DEFAULT_COLOR_JITTER
        if color_jitter:
            if len(color_jitter) != 4:
                raise ValueError(f"color_jitter must be True, False or (brightness, contrast, saturation, hue), got {color_jitter}")
            b, c, s, h = (float(v) for v in color_jitter)
            steps.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
        self.pipeline = v2.Compose(steps + _normalize())

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return _finish(self.pipeline(to_tv_tensors(sample, self.num_classes)), sample)

    def __repr__(self) -> str:
        return f"TrainTransform({self.pipeline})"


class EvalTransform:
    """Evaluation: optional resize to ``size`` (maps with exact nearest neighbour), ImageNet
    normalisation; nothing random.

    Args:
        size: Output ``(H, W)``; ``None`` keeps each image's size.
        num_classes: Segmentation classes ``K`` (seg values ``0..K-1`` or 255); default 19.
    """

    def __init__(self, size: int | Sequence[int] | None = None, num_classes: int = NUM_CLASSES):
        self.num_classes = int(num_classes)
        self.size = None if size is None else _size_pair(size, "size")
        steps: list[v2.Transform] = [] if self.size is None else [JointResizedCrop(self.size, random=False)]
        self.pipeline = v2.Compose(steps + _normalize())

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return _finish(self.pipeline(to_tv_tensors(sample, self.num_classes)), sample)

    def __repr__(self) -> str:
        return f"EvalTransform({self.pipeline})"
