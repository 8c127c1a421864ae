"""Prediction files: what ``mtdense predict`` writes for images and videos, as library functions.

For an image ``NAME``: ``NAME_panel.png`` (image | segmentation overlay | depth colour map),
``NAME_trainIds.png`` (uint8 train ids), ``NAME_labelIds.png`` (uint8 Cityscapes label ids) and
``NAME_depth.png`` (uint16, ``round(depth_m * 256)``, 0 = invalid). For a video ``NAME``:
``NAME_annotated.mp4``, the panel of every frame with the measured model speed. Every file is
written atomically (:mod:`mtdense.io`): a killed run leaves whole files or none. An image
is computed whole (labels, depth, panel) before its first file is written, so one that fails
(too large, out of memory) leaves none of its files behind.

Inputs over the predictor's pixel limit (``Predictor(max_pixels=...)``, ``--max-pixels``) are
refused by name: an image by its header before it is decoded where the header tells the size,
a video by its frame size before its first frame runs.

    >>> predictor = Predictor("model.pth")
    >>> write_image_outputs(predictor, "street.png", "out/", "street")
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2

from mtdense.data.image import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from mtdense.io import atomic_path, write_png_atomic

__all__ = ["expand_inputs", "UniqueStems", "write_image_outputs", "write_video_outputs"]


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


def write_image_outputs(predictor, path: str | Path, out: str | Path, stem: str, panels: bool = True,
                        depth_range: tuple[float, float] = (1.0, 100.0), alpha: float = 0.5) -> None:
    """Predict one image file and write its panel and raw PNGs into ``out`` (atomically).

    Raises:
        FileNotFoundError, ValueError: the image is missing, corrupt, or over the predictor's
            ``max_pixels`` (:class:`~mtdense.inference.ImageTooLarge`); nothing is written.
    """
    from mtdense.viz import make_panel

    out = Path(out)
    rgb = predictor.read_image(path)  # refused by its header when over the limit
    pred = predictor.predict(rgb)
    files = {"trainIds": pred.seg, "labelIds": pred.label_ids(), "depth": pred.depth_png16()}
    if panels:
        panel = make_panel(rgb, pred.seg, pred.depth, tuple(depth_range), alpha)
        files["panel"] = cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)
    del rgb, pred
    for name, image in files.items():
        write_png_atomic(out / f"{stem}_{name}.png", image)


def write_video_outputs(predictor, path: str | Path, out_file: str | Path, depth_range: tuple[float, float] = (1.0, 100.0),
                        alpha: float = 0.5) -> tuple[int, float]:
    """Annotate every frame of a video with its panel and the measured model FPS.

    Returns:
        ``(frames, mean model FPS)``.

    Raises:
        ValueError: OpenCV cannot open or decode the video, or cannot write ``out_file``, or
            its frames are over the predictor's ``max_pixels``
            (:class:`~mtdense.inference.ImageTooLarge`, before any frame runs).
    """
    from tqdm import tqdm

    from mtdense.viz import make_panel

    path, out_file = Path(path), Path(out_file)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video (corrupt, or a codec this OpenCV build lacks)")
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps_in = fps_in if 0 < fps_in < 1000 else 25.0  # containers without a frame rate: write at 25 Hz
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    frames, spent = 0, 0.0
    try:
        predictor.check_size((int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))), path, what="video")
        with atomic_path(out_file) as tmp, tqdm(total=total, desc=path.name, unit="frame", leave=False) as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                if frames == 0:  # containers that do not tell the frame size
                    predictor.check_size(bgr.shape[:2], path, what="video")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                t0 = time.perf_counter()
                pred = predictor.predict(rgb)
                spent += time.perf_counter() - t0
                frames += 1
                title = f"model {frames / spent:.1f} FPS ({predictor.device.type})"
                panel = cv2.cvtColor(make_panel(rgb, pred.seg, pred.depth, tuple(depth_range), alpha, title=title), cv2.COLOR_RGB2BGR)
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (panel.shape[1], panel.shape[0]))
                    if not writer.isOpened():
                        raise ValueError(f"{out_file}: OpenCV cannot write an mp4v video here")
                writer.write(panel)
                bar.update(1)
            if writer is not None:
                writer.release()  # finish the file before it replaces the target
                writer = None
            if frames == 0:
                raise ValueError(f"{path}: no frame could be decoded")
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    return frames, frames / spent
