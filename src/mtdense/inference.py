"""Run a trained model on images: normalise, forward, and return outputs at the input size.

    >>> from mtdense import Predictor
    >>> predictor = Predictor("runs/demo/model.pth")            # or an nn.Module, or a .onnx export
    >>> pred = predictor.predict("frankfurt_000000_000294_leftImg8bit.png")
    >>> pred.seg.shape, pred.seg.dtype, pred.depth.dtype        # train ids, metres
    ((1024, 2048), dtype('uint8'), dtype('float32'))

Segmentation is returned as Cityscapes train ids (0..18); depth in metres, decoded from the
network's ``log(depth) / 5`` output. Both are computed at the network's input size and
resized (logits and encoded depth bilinearly, before the argmax and the decoding) to the
size of the image that was passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from mtdense.data.labels import NUM_CLASSES, train_ids_to_label_ids

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "OnnxModel", "Prediction", "Predictor", "read_image", "normalize_images", "decode_depth_output",
    "depth_to_png16",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageInput = str | Path | np.ndarray
BatchInput = ImageInput | Sequence[ImageInput]


def decode_depth_output(y: torch.Tensor) -> torch.Tensor:
    """Map the depth head's encoded output ``y = log(depth_m) / 5`` back to metres: ``exp(5 y)``."""
    return torch.exp(5.0 * y)


def depth_to_png16(depth_m: np.ndarray) -> np.ndarray:
    """Encode depth in metres as a 16-bit PNG array: ``round(depth_m * 256)``, 0 = invalid.

    Args:
        depth_m: H x W depth in metres (0 or non-finite = invalid).

    Returns:
        H x W uint16; depths beyond 255.99 m saturate at 65535.
    """
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(d * 256.0), 0, 65535).astype(np.uint16)


_NORMALIZE = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def normalize_images(
    images: Sequence[np.ndarray], size: tuple[int, int] | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Stack same-sized RGB uint8 images into the network's input.

    Args:
        images: H x W x 3 uint8 RGB arrays, all the same size.
        size: Resize to ``(H, W)`` first (bilinear, antialiased); ``None`` keeps the size.
        device: Where the batch is built (resizing on a GPU is faster).

    Returns:
        ``B x 3 x H x W`` float32: RGB scaled to 0..1, then ImageNet mean/std normalised.
    """
    batch = tv_tensors.Image(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)).to(device)
    if size is not None and tuple(batch.shape[-2:]) != tuple(size):
        batch = v2.functional.resize(batch, list(size), antialias=True)
    return _NORMALIZE(batch).as_subclass(torch.Tensor)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file exists but is not a readable image (corrupt or another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image (corrupt, truncated or not an image format OpenCV reads)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass
class Prediction:
    """The outputs for one image, at that image's size.

    Attributes:
        seg: H x W uint8 Cityscapes train ids 0..18.
        depth: H x W float32 depth in metres (> 0).
    """

    seg: np.ndarray
    depth: np.ndarray

    def label_ids(self) -> np.ndarray:
        """H x W uint8 Cityscapes label ids (for the official evaluation scripts)."""
        return train_ids_to_label_ids(self.seg)

    def depth_png16(self) -> np.ndarray:
        """H x W uint16, ``round(depth_m * 256)`` (the mtdense 16-bit depth PNG encoding)."""
        return depth_to_png16(self.depth)


class OnnxModel(nn.Module):
    """An ``mtdense export`` ONNX file (fp32 or int8) run by ONNX Runtime, called like the network:
    ``B x 3 x H x W`` normalised batch in, ``{"seg": logits, "depth": encoded depth}`` out.

    Args:
        path: The ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda"`` (needs onnxruntime-gpu).

    Attributes:
        fixed_size: ``(H, W)`` of a ``--static`` export (it accepts nothing else), else ``None``.
        tasks: Output name -> channels.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        super().__init__()
        from mtdense.export import ort_session

        self.path = Path(path)
        self.session = ort_session(self.path, device=torch.device(device).type)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = list(inp.shape)
        if len(dims) != 4 or dims[1] != 3:
            raise ValueError(f"{self.path}: expected one B x 3 x H x W image input, the file has {inp.name} {dims}; export it with 'mtdense export'")
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        self.fixed_size = (dims[2], dims[3]) if isinstance(dims[2], int) and isinstance(dims[3], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.tasks = {o.name: o.shape[1] for o in self.session.get_outputs()}
        missing = {"seg", "depth"} - set(self.output_names)
        if missing:
            raise ValueError(f"{self.path}: no output named {sorted(missing)} (outputs: {self.output_names}); export it with 'mtdense export'")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.fixed_size is not None and tuple(x.shape[-2:]) != self.fixed_size:
            raise ValueError(f"{self.path} is a fixed-size export for {self.fixed_size[0]}x{self.fixed_size[1]}, "
                             f"got {x.shape[-2]}x{x.shape[-1]}; pass size={self.fixed_size} or export without --static")
        xs = np.ascontiguousarray(x.detach().float().cpu().numpy())
        chunks = [xs[i : i + 1] for i in range(len(xs))] if self.fixed_batch == 1 else [xs]
        runs = [self.session.run(self.output_names, {self.input_name: c}) for c in chunks]
        return {n: torch.from_numpy(np.concatenate([r[k] for r in runs])).to(x.device) for k, n in enumerate(self.output_names)}


def _as_model(model: str | Path | nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if Path(model).suffix.lower() == ".onnx":
        return OnnxModel(model, device)
    from mtdense.models import load_model

    return load_model(model)


class Predictor:
    """Segmentation and depth for images, a batch or video frames, from a trained model.

    Args:
        model: A checkpoint path (anything :func:`mtdense.load_model` reads), an ``.onnx``
            file from ``mtdense export`` (run by ONNX Runtime, see :class:`OnnxModel`), or a
            model whose ``forward`` returns ``{"seg": B x 19 x h x w logits, "depth": B x 1 x h x w}``.
        device: ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        size: Network input size ``(H, W)``; images are resized to it and the outputs resized
            back. ``None`` runs each image at its own size (H, W >= 32), or at the size a
            fixed-size (``--static``) ONNX export was made for.
        channels_last: Run in NHWC memory format (faster for convolutions on most CPUs and
            tensor-core GPUs; the outputs are the same).
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str | torch.device = "cpu",
        size: tuple[int, int] | None = None,
        channels_last: bool = False,
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
        if size is not None:
            if len(size) != 2 or min(size) < 32:
                raise ValueError(f"size must be (H, W) with H, W >= 32, got {size}")
            size = (int(size[0]), int(size[1]))
        self.model = _as_model(model, self.device).to(self.device).eval()
        fixed = getattr(self.model, "fixed_size", None)
        if fixed is not None:
            if size is not None and size != fixed:
                raise ValueError(f"{model} is a fixed-size export for {fixed[0]}x{fixed[1]}, not {size[0]}x{size[1]}; "
                                 "drop size or export again with that --size")
            size = fixed
        self.size = size
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        tasks = getattr(self.model, "tasks", {"seg": NUM_CLASSES, "depth": 1})
        missing = {"seg", "depth"} - set(tasks)
        if missing:
            raise ValueError(f"the model has no {sorted(missing)} head (its tasks: {sorted(tasks)}); Predictor needs seg and depth")

    # -- input handling -------------------------------------------------------------------
    @staticmethod
    def _to_rgb(image: ImageInput) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(image)
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected a path or an H x W x 3 uint8 RGB array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB image, got an array of shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB image (0..255), got dtype {image.dtype}; convert with (img * 255).astype(np.uint8) if it is 0..1")
        return image

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-sized RGB uint8 images -> ``B x 3 x H x W`` normalised batch on ``self.device``."""
        x = normalize_images(images, self.size, self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- forward ----------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network on a normalised batch and decode.

        Args:
            x: ``B x 3 x h x w`` ImageNet-normalised images on ``self.device``.
            out_size: Size to return the outputs at; default the network input size.

        Returns:
            ``(seg, depth)``: ``B x H x W`` uint8 train ids and ``B x H x W`` float32 metres.
        """
        out = self.model(x)
        logits, y = out["seg"], out["depth"]
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            y = F.interpolate(y, size=out_size, mode="bilinear", align_corners=False)
        seg = logits.argmax(1).to(torch.uint8)
        depth = decode_depth_output(y[:, 0].float())
        return seg, depth

    def predict(self, image: BatchInput) -> Prediction | list[Prediction]:
        """Predict segmentation and depth.

        Args:
            image: One image (a path, or an H x W x 3 uint8 RGB array) or a batch: a list of
                those, or an N x H x W x 3 uint8 array. Batch members may differ in size.

        Returns:
            A :class:`Prediction` for one image, a list of them (in input order) for a batch;
            each at its own image's size.

        Raises:
            FileNotFoundError, ValueError: an unreadable file or a malformed array; the
                message names it.
        """
        single = isinstance(image, (str, Path)) or (isinstance(image, np.ndarray) and image.ndim == 3)
        if single:
            items = [image]
        elif isinstance(image, np.ndarray):
            if image.ndim != 4 or image.shape[-1] != 3:
                raise ValueError(f"expected an H x W x 3 image or an N x H x W x 3 batch, got shape {image.shape}")
            items = list(image)
        else:
            items = list(image)
            if not items:
                raise ValueError("empty batch: pass at least one image")
        rgbs = [self._to_rgb(it) for it in items]
        preds: list[Prediction | None] = [None] * len(rgbs)
        # Same-sized images run together; a mixed batch runs one group per size.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(rgbs):
            groups.setdefault(rgb.shape[:2], []).append(i)
        for hw, idx in groups.items():
            seg, depth = self.forward(self.preprocess([rgbs[i] for i in idx]), out_size=hw)
            seg_np, depth_np = seg.cpu().numpy(), depth.cpu().numpy().astype(np.float32, copy=False)
            for j, i in enumerate(idx):
                preds[i] = Prediction(seg=seg_np[j], depth=depth_np[j])
        return preds[0] if single else preds  # type: ignore[return-value]
