"""Run a trained model on images: normalise, forward, and return outputs at the input size.

    >>> from mtdense import Predictor
    >>> predictor = Predictor("runs/demo/model.pth")            # or an nn.Module, or a .onnx export
    >>> pred = predictor.predict("frankfurt_000000_000294_leftImg8bit.png")
    >>> pred.seg.shape, pred.seg.dtype, pred.depth.dtype        # train ids, metres
    ((1024, 2048), dtype('uint8'), dtype('float32'))

Segmentation is returned as Cityscapes train ids (0..18); depth in metres, decoded from the
network's ``log(depth) / 5`` output; for a model with a normals head, surface normals as unit
vectors in camera coordinates. All are computed at the network's input size and resized
(logits, encoded depth and normals bilinearly, before the argmax, the decoding and the
renormalisation) to the size of the image that was passed in.

Memory at the original size is bounded by its pixels, not pixels x classes: the logits are
resized one class at a time into a running maximum (the same labels as a bilinear resize of
all logits followed by an argmax), and depth is resized as its one channel. Images over
``max_pixels`` (:data:`DEFAULT_MAX_PIXELS`, 50 MP) are refused by name before they are decoded
where the file's header tells their size (:class:`ImageTooLarge`).

The work is split in three steps that :mod:`mtdense.pipeline` runs in three threads for videos
and folders: :meth:`Predictor.preprocess` (resize, normalise), the runtime
(:meth:`Predictor.infer`: labels straight from the runtime where the image is the network's
size) and :meth:`Predictor.postprocess` (labels and metres at the image's size). Pre- and
post-processing are PyTorch, OpenCV and NumPy operations; while a runtime other than PyTorch
runs the network they run on one PyTorch thread, and while the network runs on the CPU on one
OpenCV thread (:func:`helper_threads`), so neither library's workers wake to compete with the
network's threads.
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtdense.data.depth import decode_depth, depth_to_png16
from mtdense.data.description import DatasetInfo
from mtdense.data.image import normalize_images, read_image
from mtdense.data.labels import train_ids_to_label_ids
from mtdense.data.normals import encode_normals
from mtdense.models.net import finish_output
from mtdense.deploy.runtime import Runtime, argmax_labels, open_runtime

__all__ = ["Prediction", "Predictor", "ImageTooLarge", "DEFAULT_MAX_PIXELS", "resize_labels", "argmax_labels", "helper_threads"]

ImageInput = str | Path | np.ndarray
BatchInput = ImageInput | Sequence[ImageInput]

DEFAULT_MAX_PIXELS = 50_000_000
"""The largest image (H x W) :class:`Predictor` and ``mtdense predict`` accept by default: 50 MP."""


class ImageTooLarge(ValueError):
    """An image (or video frame) over the pixel limit; the message names it and how to go on."""


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} MP"


def _header_pixels(path: str | Path) -> tuple[int, str | None] | None:
    """``(pixels, "W x H")`` of an image file from its header, without decoding the pixels.

    ``None`` where the header cannot be read this way (a format Pillow does not know, a damaged
    header): the caller decodes the image and looks at its shape instead. For an image over twice
    Pillow's own limit only the count is known (Pillow refuses it, naming the count).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return (int(found.group(1)), None) if found else None
    except (OSError, SyntaxError, ValueError):
        return None
    return int(w) * int(h), f"{w} x {h}"


def _check_pixels(name: str | Path, pixels: int, shape: str | None, max_pixels: int, what: str = "image") -> None:
    if max_pixels and pixels > max_pixels:
        size = f"{shape} = {_mp(pixels)}" if shape else _mp(pixels)
        raise ImageTooLarge(f"{name}: {size} is over --max-pixels {_mp(max_pixels)}; "
                            f"pass --max-pixels 0 to lift the limit (max_pixels=0 in Python) or resize the {what}")


_threads_lock = threading.Lock()
_threads_depth = 0
_threads_saved: tuple[int, int] = (0, 0)  # PyTorch's and OpenCV's thread counts before the outermost block


@contextlib.contextmanager
def helper_threads(engine: str = "", device: str = "cpu") -> Iterator[None]:
    """Pre- and post-processing on one thread each of PyTorch and OpenCV for the block, so that
    they never compete with the network's own threads.

    - PyTorch: ``torch.set_num_threads(1)`` unless ``engine`` is ``"PyTorch"`` (its threads are
      then the network's own). With one thread PyTorch runs its operations in the calling
      thread and never opens an OpenMP team, so no PyTorch worker spins beside ONNX Runtime or
      the compiled kernel.
    - OpenCV: ``cv2.setNumThreads(1)`` while the network runs on the CPU. Drawing a panel or
      converting a frame then stays in the stage's thread (at that thread's priority, see
      :data:`mtdense.pipeline.HELPER_NICE`) instead of waking OpenCV's pool on the cores the
      network is using: at 400 x 1024 a panel costs 4.2 ms of CPU on one thread and 5.0 ms on
      two. With the network on a GPU the cores are free and OpenCV keeps its threads.

    The previous counts are restored when the outermost block ends (nested blocks restore them
    once). Both settings are per process, and each thread reads PyTorch's when it first runs a
    PyTorch operation: threads that pre- or post-process must start inside the block (those of
    :mod:`mtdense.pipeline` do).

    Args:
        engine: The runtime's :attr:`~mtdense.deploy.runtime.Runtime.engine`.
        device: Where the network runs (``"cpu"``, ``"cuda"``).
    """
    global _threads_depth, _threads_saved
    torch_one, cv_one = engine != "PyTorch", device == "cpu"
    with _threads_lock:
        if _threads_depth == 0:
            _threads_saved = (torch.get_num_threads(), cv2.getNumThreads())
            if torch_one and _threads_saved[0] != 1:
                torch.set_num_threads(1)
            if cv_one and _threads_saved[1] != 1:
                cv2.setNumThreads(1)
        _threads_depth += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_depth -= 1
            if _threads_depth == 0:
                if torch.get_num_threads() != _threads_saved[0]:
                    torch.set_num_threads(_threads_saved[0])
                if cv2.getNumThreads() != _threads_saved[1]:
                    cv2.setNumThreads(_threads_saved[1])


def resize_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``B x C x h x w`` logits -> ``B x H x W`` uint8 argmax of their bilinear resize to ``size``.

    The classes are resized one at a time into a running maximum, so the memory at ``size`` is
    a few bytes per pixel whatever ``C`` (a resize of all logits at once asks for ``C x H x W``
    floats: 8 GB for 19 classes on a 108 MP image). The labels are those of
    ``F.interpolate(logits, size, mode="bilinear").argmax(1)``: each class is resized by the
    same kernel, and ties go to the lower class as ``argmax`` gives them.
    """
    if logits.shape[1] > 256:
        raise ValueError(f"resize_labels returns uint8 labels: at most 256 classes, got {logits.shape[1]}")

    def one(c: int) -> torch.Tensor:
        return F.interpolate(logits[:, c:c + 1], size=size, mode="bilinear", align_corners=False)[:, 0]

    best = one(0)
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for c in range(1, logits.shape[1]):
        value = one(c)
        labels.masked_fill_(value > best, c)
        torch.maximum(best, value, out=best)
        del value
    return labels


@dataclass
class Prediction:
    """The outputs for one image, at that image's size.

    Attributes:
        seg: H x W uint8 class indices ``0..K-1`` of the model's classes (for a Cityscapes
            model the train ids 0..18).
        depth: H x W float32 depth in metres (> 0).
        info: The description of the model's training data (class names, palette); ``None``:
            Cityscapes, as for a checkpoint saved without one.
        normals: H x W x 3 float32 unit surface normals in camera coordinates (x right, y down,
            z forward), for a model with a normals head; ``None`` otherwise.
    """

    seg: np.ndarray
    depth: np.ndarray
    info: DatasetInfo | None = None
    normals: np.ndarray | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        """The names of the class indices in :attr:`seg`."""
        return (self.info or DatasetInfo.cityscapes()).classes

    def label_ids(self) -> np.ndarray:
        """H x W uint8 Cityscapes label ids (for the official evaluation scripts).

        Raises:
            ValueError: The model's classes are not the 19 Cityscapes train classes (there are
                no label ids to map them to; :attr:`seg` holds the class indices).
        """
        from mtdense.outputs import has_cityscapes_classes

        if not has_cityscapes_classes(self.info):
            raise ValueError(f"Cityscapes label ids exist only for the 19 Cityscapes classes; this model's classes are "
                             f"{', '.join(self.info.classes)}: use the class indices in Prediction.seg")
        return train_ids_to_label_ids(self.seg)

    def depth_png16(self) -> np.ndarray:
        """H x W uint16, ``round(depth_m * 256)`` (the mtdense 16-bit depth PNG encoding)."""
        return depth_to_png16(self.depth)

    def normals_rgb(self) -> np.ndarray:
        """H x W x 3 uint8 RGB, ``round((n + 1) * 127.5)`` (the normals PNG encoding of
        :mod:`mtdense.data.normals`, also their picture).

        Raises:
            ValueError: The model has no normals head.
        """
        if self.normals is None:
            raise ValueError("this prediction has no normals: the model has no normals head")
        return encode_normals(self.normals)


class Predictor:
    """Segmentation and depth (and normals, where the model has them) for images, a batch or video
    frames, from a trained model.

    Args:
        model: A checkpoint path (anything :func:`mtdense.load_model` reads), a file from
            ``mtdense export`` (``.onnx`` run by ONNX Runtime, ``.xml`` by OpenVINO), a
            runtime (:class:`~mtdense.deploy.runtime.Runtime`, e.g. a ``FusedNet``), or a model
            whose ``forward`` returns ``{"seg": B x K x h x w logits, "depth": B x 1 x h x w}``.
        device: ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        size: Network input size ``(H, W)``; images are resized to it and the outputs resized
            back. ``None`` runs each image at its own size (H, W >= 32), or at the size a
            fixed-size (``--static``) ONNX export was made for.
        channels_last: Run in NHWC memory format (faster for convolutions on most CPUs and
            tensor-core GPUs; the outputs are the same): the ``channels_last`` runtime.
        backend: The runtime (:data:`~mtdense.deploy.runtime.RUNTIMES`) that runs a model or
            checkpoint: ``eager`` (default), ``ort``, ``fused``, ... An exported file is run
            by the runtime that reads it.
        threads: Intra-op threads of the runtime (``None``: its default).
        max_pixels: The largest image (H x W) accepted; a larger one raises
            :class:`ImageTooLarge` before any network work (for a file, before decoding where
            its header tells the size). ``0`` or ``None``: no limit.

    Attributes:
        info: The :class:`~mtdense.data.description.DatasetInfo` the model was trained with
            (:func:`~mtdense.data.description.model_dataset_info`): its class names and palette
            name and colour the predictions. Cityscapes for a checkpoint saved without one; for
            a runtime or export that carries none and has another class count, classes named
            ``class 0`` .. ``class K-1`` in the default palette.
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str | torch.device = "cpu",
        size: tuple[int, int] | None = None,
        channels_last: bool = False,
        backend: str | None = None,
        threads: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        if max_pixels is not None and max_pixels < 0:
            raise ValueError(f"max_pixels must be >= 0 (0: no limit), got {max_pixels}")
        self.max_pixels = int(max_pixels or 0)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
        if size is not None:
            if len(size) != 2 or min(size) < 32:
                raise ValueError(f"size must be (H, W) with H, W >= 32, got {size}")
            size = (int(size[0]), int(size[1]))
        if channels_last:
            if backend not in (None, "channels_last"):
                raise ValueError(f"channels_last is the channels_last runtime; it cannot be combined with backend {backend!r}")
            backend = "channels_last"
        from mtdense.data.description import model_dataset_info
        from mtdense.deploy.runtime import runtime_for_file

        if isinstance(model, (str, Path)) and runtime_for_file(Path(model)) is None:
            from mtdense.models import load_model

            model = load_model(model)  # read here: its dataset description names the classes
        self.runtime: Runtime = open_runtime(model, backend, device=self.device.type, size=size, threads=threads)
        # A model carries its description; a runtime may (an export of one that does).
        info = model_dataset_info(model if isinstance(model, nn.Module) else self.runtime)
        k = self.runtime.tasks.get("seg")
        if k is not None and info.num_classes != k:  # no description, and not 19 classes
            info = DatasetInfo(classes=tuple(f"class {i}" for i in range(k)), tasks=info.tasks)
        self.info: DatasetInfo = info
        fixed = self.runtime.fixed_size
        if fixed is not None:
            if size is not None and size != fixed:
                raise ValueError(f"{model} is a fixed-size export for {fixed[0]}x{fixed[1]}, not {size[0]}x{size[1]}; "
                                 "drop size or export again with that --size")
            size = fixed
        self.size = size
        tasks = self.runtime.tasks
        missing = {"seg", "depth"} - set(tasks)
        if missing:
            raise ValueError(f"the model has no {sorted(missing)} head (its tasks: {sorted(tasks)}); Predictor needs seg and depth")

    @property
    def model(self) -> Runtime:
        """The runtime that runs the network (called as ``model(batch) -> {task: tensor}``)."""
        return self.runtime

    # -- input handling -------------------------------------------------------------------
    def check_size(self, hw: tuple[int, int], name: str | Path = "image", what: str = "image") -> None:
        """Raise :class:`ImageTooLarge` naming ``name`` if ``hw`` (H, W) is over :attr:`max_pixels`
        (``what``: the word for the input in the advice, ``"image"`` or ``"video"``)."""
        h, w = int(hw[0]), int(hw[1])
        _check_pixels(name, h * w, f"{w} x {h}", self.max_pixels, what)

    def read_image(self, path: str | Path) -> np.ndarray:
        """Read an image file as ``H x W x 3`` uint8 RGB, refusing one over :attr:`max_pixels`.

        The size is read from the header first, so a huge file is refused without decoding it;
        where the header cannot be read that way, the decoded image is checked instead.

        Raises:
            FileNotFoundError, ValueError (:class:`ImageTooLarge` among them): the message names the file.
        """
        if self.max_pixels and Path(path).is_file():
            header = _header_pixels(path)
            if header is not None:
                _check_pixels(path, *header, self.max_pixels)
        rgb = read_image(path)
        self.check_size(rgb.shape[:2], path)
        return rgb

    def _to_rgb(self, image: ImageInput) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return self.read_image(image)
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected a path or an H x W x 3 uint8 RGB array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB image, got an array of shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB image (0..255), got dtype {image.dtype}; convert with (img * 255).astype(np.uint8) if it is 0..1")
        self.check_size(image.shape[:2])
        return image

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-sized RGB uint8 images -> ``B x 3 x H x W`` normalised batch on ``self.device``."""
        return normalize_images(images, self.size, self.device)

    # -- forward ----------------------------------------------------------------------------
    def helper_threads(self) -> contextlib.AbstractContextManager[None]:
        """The PyTorch and OpenCV threads for pre- and post-processing beside this runtime
        (:func:`helper_threads`): PyTorch on one while a runtime other than PyTorch runs the
        network, OpenCV on one while the network runs on the CPU."""
        return helper_threads(self.runtime.engine, self.device.type)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network on a normalised batch and decode: ``self.postprocess(self.infer(x, out_size), out_size)``.

        Args:
            x: ``B x 3 x h x w`` ImageNet-normalised images on ``self.device``.
            out_size: Size to return the outputs at; default the network input size.

        Returns:
            ``(seg, depth)`` as :meth:`postprocess` returns them. The logits themselves, at the
            network's size: ``self.runtime(x)["seg"]``.
        """
        return self.postprocess(self.infer(x, out_size), out_size)

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """The runtime's outputs for a normalised batch, in the form :meth:`postprocess` takes
        cheapest on the way to ``out_size``: ``seg`` as uint8 labels (:meth:`Runtime.labels
        <mtdense.deploy.runtime.Runtime.labels>`: the fused kernel decodes them without writing
        the full-resolution logits) when the outputs are wanted at the network's size, else the
        logits, which :meth:`postprocess` resizes before the argmax."""
        if out_size is None or tuple(out_size) == tuple(x.shape[-2:]):
            return self.runtime.labels(x)
        return self.runtime(x)

    @torch.inference_mode()
    def postprocess(self, out: dict[str, torch.Tensor], out_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The runtime's outputs -> labels and metres at ``out_size``.

        Args:
            out: ``{"seg": B x C x h x w logits, "depth": B x 1 x h x w}`` as the runtime returns them,
                or with ``seg`` already ``B x h x w`` uint8 labels (:meth:`infer` at the network's size).
            out_size: Size to return the outputs at; default the network's size.

        Returns:
            ``(seg, depth)``: ``B x H x W`` uint8 train ids and ``B x H x W`` float32 metres.
            At the network's size the labels are :func:`argmax_labels`; at another size they
            come from :func:`resize_labels` (bilinear logits, one class at a time) and depth is
            resized as its one channel, so the memory at ``out_size`` grows with its pixels,
            not with pixels x classes.
        """
        logits, y = out["seg"], out["depth"][:, :1]
        if logits.dtype == torch.uint8 and logits.dim() == 3:  # labels already
            if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
                raise ValueError(f"labels at {tuple(logits.shape[-2:])} cannot be resized to {tuple(out_size)}; "
                                 "take the logits (Predictor.infer with that out_size) for another size")
            return logits, decode_depth(y[:, 0].float())
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            seg = resize_labels(logits, tuple(out_size))
            y = F.interpolate(y, size=tuple(out_size), mode="bilinear", align_corners=False)
        else:
            seg = argmax_labels(logits)
        depth = decode_depth(y[:, 0].float())
        return seg, depth

    @torch.inference_mode()
    def postprocess_normals(self, out: dict[str, torch.Tensor], out_size: tuple[int, int] | None = None) -> torch.Tensor | None:
        """The runtime's normals at ``out_size``: ``B x 3 x H x W`` unit vectors, resized bilinearly
        and normalised again (a blend of unit vectors is shorter); ``None`` for a model without a
        normals head."""
        n = out.get("normals")
        if n is None:
            return None
        n = n.float()
        if out_size is not None and tuple(n.shape[-2:]) != tuple(out_size):
            n = F.interpolate(n, size=tuple(out_size), mode="bilinear", align_corners=False)
        return finish_output("normals", n)

    @torch.inference_mode()
    def predictions(self, out: dict[str, torch.Tensor], out_size: tuple[int, int] | None = None) -> list[Prediction]:
        """The runtime's outputs for a batch (:meth:`infer`) -> one :class:`Prediction` per image at
        ``out_size``: :meth:`postprocess` for segmentation and depth, :meth:`postprocess_normals`
        for normals. What a caller that runs :meth:`infer` itself (a pipeline) turns outputs into."""
        seg, depth = self.postprocess(out, out_size)
        normals = self.postprocess_normals(out, out_size)
        seg_np, depth_np = seg.cpu().numpy(), depth.cpu().numpy().astype(np.float32, copy=False)
        normals_np = None if normals is None else np.ascontiguousarray(normals.permute(0, 2, 3, 1).cpu().numpy())
        return [Prediction(seg=seg_np[j], depth=depth_np[j], info=self.info,
                           normals=None if normals_np is None else normals_np[j]) for j in range(len(seg_np))]

    def predict(self, image: BatchInput) -> Prediction | list[Prediction]:
        """Predict segmentation and depth (and normals, for a model with a normals head).

        Args:
            image: One image (a path, or an H x W x 3 uint8 RGB array) or a batch: a list of
                those, or an N x H x W x 3 uint8 array. Batch members may differ in size.

        Returns:
            A :class:`Prediction` for one image, a list of them (in input order) for a batch;
            each at its own image's size.

        Raises:
            FileNotFoundError, ValueError: an unreadable file or a malformed array; the
                message names it. :class:`ImageTooLarge` (a ``ValueError``): an image over
                :attr:`max_pixels`, refused before any network work.

        Pre- and post-processing run on one PyTorch thread when the runtime is not PyTorch and
        on one OpenCV thread when the network runs on the CPU (:meth:`helper_threads`).
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
        with self.helper_threads():
            for hw, idx in groups.items():
                x = self.preprocess([rgbs[i] for i in idx])
                for j, pred in enumerate(self.predictions(self.infer(x, hw), hw)):
                    preds[idx[j]] = pred
        return preds[0] if single else preds  # type: ignore[return-value]
