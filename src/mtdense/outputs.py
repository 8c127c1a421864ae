"""Prediction files: what ``mtdense predict`` writes for images and videos.

For an image ``NAME``: ``NAME_panel.png`` (image | segmentation overlay in the colours of the
model's dataset | depth colour map), ``NAME_trainIds.png`` (uint8 class indices 0..K-1 of the
model's classes; for a Cityscapes model the train ids), ``NAME_labelIds.png`` (uint8 Cityscapes
label ids, for the official scripts; written only by a model of the 19 Cityscapes classes),
``NAME_depth.png`` (uint16, ``round(depth_m * 256)``, 0 = invalid) and, for a model with a normals
head, ``NAME_normals.png`` (8-bit RGB ``round((n + 1) * 127.5)``, :mod:`mtdense.data.normals`; the
panel then has a normals tile too). For a video ``NAME``:
``NAME_annotated.mp4``, the panel of every frame with the measured model speed. Every file is
written atomically (:mod:`mtdense.io`): a killed run leaves whole files or none. An image
is computed whole (labels, depth, panel) before its first file is written, so one that fails
(too large, out of memory) leaves none of its files behind.

Inputs over the predictor's pixel limit (``Predictor(max_pixels=...)``, ``--max-pixels``) are
refused by name: an image by its header before it is decoded where the header tells the size,
a video by its frame size before its first frame runs.

    >>> predictor = Predictor("model.pth")
    >>> write_image_outputs(predictor, "street.png", "out/", "street")

Whole videos and folders run through :mod:`mtdense.pipeline`, which overlaps decoding and
writing with the network and uses :func:`image_files`, :func:`write_image_files` and
:class:`VideoSink` from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from mtdense.data.description import DatasetInfo
from mtdense.data.image import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from mtdense.data.labels import TRAIN_CLASS_NAMES
from mtdense.io import WriteError, write_png_atomic

__all__ = ["expand_inputs", "UniqueStems", "has_cityscapes_classes", "image_files", "write_image_files",
           "write_image_outputs", "VideoSink"]


def has_cityscapes_classes(info: DatasetInfo | None) -> bool:
    """Whether ``info``'s classes are the 19 Cityscapes train classes, in order (``None``: a model
    without a description, trained on Cityscapes). Only then do class indices map to the official
    Cityscapes label ids (``labelIds`` files, the official evaluation scripts)."""
    return info is None or tuple(info.classes) == tuple(TRAIN_CLASS_NAMES)


def expand_inputs(inputs: Sequence[str | Path]) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, kind)`` for files and folders (searched recursively, sorted), with kind
    ``image``, ``video`` or ``missing``."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    yield f, "image"
                elif f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES:
                    yield f, "video"
        elif path.is_file():
            yield path, "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
        else:
            yield path, "missing"


class UniqueStems:
    """Output stems, unique within one run (two inputs named a.png get a and a_2)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, path: Path) -> str:
        stem, i = path.stem, 1
        while stem in self.used:
            i += 1
            stem = f"{path.stem}_{i}"
        self.used.add(stem)
        return stem


def image_files(rgb: np.ndarray, pred, panels: bool = True, depth_range: tuple[float, float] = (1.0, 100.0),
                alpha: float = 0.5) -> dict[str, np.ndarray]:
    """The images written for one input, by name: ``trainIds`` (uint8 class indices), ``labelIds``
    (uint8 Cityscapes label ids, only for a model of the Cityscapes classes), ``depth`` (uint16,
    ``round(depth_m * 256)``), ``normals`` (BGR uint8 of the RGB encoding ``round((n + 1) * 127.5)``,
    only when ``pred`` has normals) and, with ``panels``, ``panel`` (BGR uint8, in the palette of the
    model's dataset).

    Args:
        rgb: The input, ``H x W x 3`` uint8 RGB.
        pred: Its :class:`~mtdense.inference.Prediction` at ``H x W`` (its ``info`` gives the
            classes and colours).
    """
    from mtdense.viz import make_panel

    info = getattr(pred, "info", None)
    files = {"trainIds": pred.seg}
    if has_cityscapes_classes(info):
        files["labelIds"] = pred.label_ids()
    files["depth"] = pred.depth_png16()
    normals = getattr(pred, "normals", None)
    if normals is not None:
        files["normals"] = cv2.cvtColor(pred.normals_rgb(), cv2.COLOR_RGB2BGR)
    if panels:
        palette = None if info is None else info.palette
        files["panel"] = make_panel(rgb, pred.seg, pred.depth, tuple(depth_range), alpha, palette=palette, normals=normals,
                                    bgr=True)
    return files


def write_image_files(out: str | Path, stem: str, files: dict[str, np.ndarray]) -> None:
    """Write :func:`image_files` as ``out/STEM_NAME.png``, each atomically."""
    for name, image in files.items():
        write_png_atomic(Path(out) / f"{stem}_{name}.png", image)


def write_image_outputs(predictor, path: str | Path, out: str | Path, stem: str, panels: bool = True,
                        depth_range: tuple[float, float] = (1.0, 100.0), alpha: float = 0.5) -> None:
    """Predict one image file and write its panel and raw PNGs into ``out`` (atomically).

    For many images, :func:`mtdense.pipeline.predict_images` overlaps the reading and writing
    with the network.

    Raises:
        FileNotFoundError, ValueError: the image is missing, corrupt, or over the predictor's
            ``max_pixels`` (:class:`~mtdense.inference.ImageTooLarge`); nothing is written.
    """
    rgb = predictor.read_image(path)  # refused by its header when over the limit
    files = image_files(rgb, predictor.predict(rgb), panels, depth_range, alpha)
    del rgb
    write_image_files(out, stem, files)


class VideoSink:
    """The annotated video: one panel per frame (image | segmentation | depth), in mp4v.

    The writer is opened at the first frame (its size is the panel's). Write into a temporary
    path (:func:`mtdense.io.atomic_path`) and :meth:`close` before it replaces the target.

    Args:
        path: The file to write (the temporary one).
        fps: Frame rate written into the container.
        name: How errors name the file (the target).
        depth_range, alpha: As :func:`mtdense.viz.make_panel`.
        palette: ``K x 3`` uint8 RGB class colours (the model's
            :attr:`~mtdense.data.description.DatasetInfo.palette`); ``None``: Cityscapes.

    Raises:
        WriteError: OpenCV cannot open an mp4v writer at ``path`` (at the first frame).
    """

    def __init__(self, path: str | Path, fps: float, name: str | Path | None = None,
                 depth_range: tuple[float, float] = (1.0, 100.0), alpha: float = 0.5,
                 palette: np.ndarray | None = None):
        self.path, self.fps = Path(path), float(fps)
        self.name = Path(name) if name is not None else self.path
        self.depth_range, self.alpha = tuple(depth_range), alpha
        self.palette = None if palette is None else np.asarray(palette, dtype=np.uint8)
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray, seg: np.ndarray, depth: np.ndarray, title: str | None = None,
              normals: np.ndarray | None = None) -> None:
        """Add the panel of one frame: ``rgb`` H x W x 3 uint8, ``seg`` class indices, ``depth`` metres,
        ``normals`` H x W x 3 unit vectors (a model with a normals head; every frame of a video alike)."""
        from mtdense.viz import make_panel

        panel = make_panel(rgb, seg, depth, self.depth_range, self.alpha, title=title, palette=self.palette,
                           normals=normals, bgr=True)
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (panel.shape[1], panel.shape[0]))
            if not self.writer.isOpened():
                self.writer = None
                raise WriteError(0, f"{self.name}: OpenCV cannot write an mp4v video here; choose another --out")
        self.writer.write(panel)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
