"""An image network exported to ONNX (one image in, one map out), run with ONNX Runtime in batches.

What the monocular-depth and segmentation teachers share: the network gets RGB scaled to
``[0, 1]`` and normalised by ``(x - mean) / std`` (ImageNet's mean and std by default), at a fixed
input size (``input_size``, or the file's own where its input has one) or at each frame's own
size, in batches of frames of one size; its first output is returned per frame as
``C x h x w`` float32 at the network's size. Resizing back to the frame is the teacher's: depth
is resized as a map, class scores before the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtdense.data.image import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["OnnxImageNet", "resize_map"]


def resize_map(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``C x h x w`` (or ``h x w``) float32 -> the same at ``size`` = ``(H, W)``, bilinear
    (half-pixel centres, as ``F.interpolate(..., align_corners=False)``)."""
    h, w = size
    if x.shape[-2:] == (h, w):
        return x
    if x.ndim == 2:
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    # OpenCV resizes up to 4 channels at once in its fast path; a plane at a time keeps any count.
    return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in x])


class OnnxImageNet:
    """A network with one ``N x 3 x H x W`` image input, run by ONNX Runtime.

    Args:
        path: The ``.onnx`` file.
        what: What the network is, for messages (``monocular depth network``).
        input_size: Network input ``(H, W)``; ``None``: the file's fixed size where it has one,
            else each frame's own size.
        mean, std: Per-channel normalisation of RGB in ``[0, 1]``.
        device: ``cpu`` or ``cuda`` (needs onnxruntime-gpu).
        batch: Frames per run (1 where the file fixes the batch to 1).
        threads: ONNX Runtime intra-op threads (``None``: its default).

    Raises:
        FileNotFoundError: No such file. ValueError: a file ONNX Runtime cannot load, a network
            that does not take one ``N x 3 x H x W`` image, or a size the file does not take; the
            message names the file.
    """

    def __init__(
        self,
        path: str | Path,
        what: str = "network",
        input_size: tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "cpu",
        batch: int = 4,
        threads: int | None = None,
    ):
        from mtdense.deploy.onnx import ort_session

        self.path = Path(path)
        self.what = what
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
            raise ValueError(f"--mean and --std need 3 values each, std > 0; got mean={list(mean)}, std={list(std)}")
        if batch < 1:
            raise ValueError(f"--batch must be >= 1, got {batch}")
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file; give the {what} exported to ONNX")
        try:
            self.session = ort_session(self.path, device=device, threads=threads)
        except ValueError as exc:
            if exc.__cause__ is None:  # a bad device, not a bad file
                raise
            detail = " ".join(str(exc.__cause__).split())[:300]
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({detail}); is it a complete .onnx file of "
                             f"the {what}?") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            described = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
            raise ValueError(f"{self.path}: has {len(inputs)} inputs ({described}); a {what} teacher takes one image, "
                             f"N x 3 x H x W; export the network with that one input")
        spec = inputs[0]
        shape = list(spec.shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ValueError(f"{self.path}: its input {spec.name} has shape {shape}, not N x 3 x H x W; a {what} teacher "
                             "takes one RGB image")
        if spec.type not in ("tensor(float)", "tensor(float16)"):
            raise ValueError(f"{self.path}: its input {spec.name} is a {spec.type}, not float; export it taking "
                             "normalised float images")
        self.input_name = spec.name
        self.input_dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
        self.output_name = self.session.get_outputs()[0].name
        h, w = shape[2], shape[3]
        self.model_size = (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None
        if input_size is not None:
            input_size = (int(input_size[0]), int(input_size[1]))
            if min(input_size) < 1:
                raise ValueError(f"--input-size must be H W > 0, got {input_size}")
            if self.model_size is not None and input_size != self.model_size:
                raise ValueError(f"{self.path}: takes a fixed input of {self.model_size[0]} x {self.model_size[1]}, not "
                                 f"{input_size[0]} x {input_size[1]}; drop --input-size or export it at that size")
        self.input_size = input_size or self.model_size
        self.batch = 1 if shape[0] == 1 else int(batch)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.device = device

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.path.resolve()), "input_size": list(self.input_size) if self.input_size else None,
                "mean": self.mean.tolist(), "std": self.std.tolist()}

    def preprocess(self, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``H x W x 3`` uint8 RGB -> ``3 x h x w`` float32 network input at ``size``."""
        h, w = size
        if rgb.shape[:2] != (h, w):
            shrink = h * w < rgb.shape[0] * rgb.shape[1]
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        x = (rgb.astype(np.float32) * np.float32(1 / 255) - self.mean) / self.std
        return x.transpose(2, 0, 1)

    def run(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The network's first output for each image: ``C x h x w`` float32 at the network's size.

        Raises:
            ValueError: An output that is no map (the message names the file and its shape).
        """
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            groups.setdefault(self.input_size or tuple(rgb.shape[:2]), []).append(i)
        for size, idx in groups.items():
            for start in range(0, len(idx), self.batch):
                part = idx[start:start + self.batch]
                x = np.stack([self.preprocess(images[i], size) for i in part]).astype(self.input_dtype, copy=False)
                y = np.asarray(self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0])
                if y.ndim == 3:
                    y = y[:, None]
                if y.ndim != 4 or y.shape[0] != len(part):
                    raise ValueError(f"{self.path}: its output {self.output_name} has shape {list(y.shape)} for a batch of "
                                     f"{len(part)}; a {self.what} teacher needs N x C x h x w (or N x h x w)")
                for j, i in enumerate(part):
                    out[i] = y[j].astype(np.float32, copy=False)
        return out  # type: ignore[return-value]
