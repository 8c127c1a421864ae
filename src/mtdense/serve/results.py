"""One prediction as the JSON ``POST /predict`` answers: what is in the image, and the PNGs asked for.

- ``classes``: each class present, most pixels first: ``index``, ``name``, ``color`` (RGB of the
  model's dataset description) and ``share`` (fraction of the image's pixels, 0..1).
- ``depth``: ``min``, ``median``, ``max`` in metres over the valid pixels (``null`` where none is).
- ``size``: ``[height, width]`` of the image in pixels.
- With ``?outputs=``: ``seg_png`` (8-bit class indices), ``depth_png`` (16-bit, ``round(metres
  x 256)``, 0 = invalid) and ``panel_png`` (image | overlay | depth colour map with its scale
  bar), base64-encoded, the same images ``mtdense predict`` writes (:func:`mtdense.outputs.image_files`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

from mtdense.data.description import DatasetInfo
from mtdense.inference import Prediction
from mtdense.io import encode_image
from mtdense.outputs import image_files

__all__ = ["OUTPUTS", "parse_outputs", "class_shares", "depth_stats", "encode_outputs", "answer"]

OUTPUTS = ("seg", "depth", "panel")
"""What ``?outputs=`` may ask for, each answered as ``NAME_png``."""

# image_files() names -> the keys of the answer
_FILE_OF = {"seg": "trainIds", "depth": "depth", "panel": "panel"}


def parse_outputs(text: str | None) -> tuple[str, ...]:
    """``"seg,depth"`` -> ``("seg", "depth")``; ``ValueError`` naming an unknown one and the valid ones."""
    if not text:
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in OUTPUTS]
    if wrong:
        raise ValueError(f"unknown output {', '.join(repr(n) for n in wrong)} in ?outputs={text}; "
                         f"accepted: any of {', '.join(OUTPUTS)}, comma-separated")
    return tuple(dict.fromkeys(names))


def class_shares(seg: np.ndarray, names: Sequence[str], colours: np.ndarray) -> list[dict]:
    """The classes present in ``seg`` (H x W class indices), most pixels first."""
    counts = np.bincount(seg.ravel(), minlength=len(names))[: len(names)]
    total = max(1, seg.size)
    order = sorted(np.flatnonzero(counts), key=lambda k: (-counts[k], k))
    return [{"index": int(k), "name": names[k], "color": [int(c) for c in colours[k]], "share": round(float(counts[k]) / total, 6)}
            for k in order]


def depth_stats(depth: np.ndarray) -> dict[str, float | None]:
    """``min``, ``median``, ``max`` of the valid (finite, > 0) depths in metres; ``None`` where none is."""
    d = depth[np.isfinite(depth) & (depth > 0)]
    if d.size == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": round(float(d.min()), 4), "median": round(float(np.median(d)), 4), "max": round(float(d.max()), 4)}


def encode_outputs(rgb: np.ndarray, pred: Prediction, outputs: Sequence[str], depth_range: tuple[float, float],
                   alpha: float) -> dict[str, str]:
    """``{"seg_png": base64, ...}`` for the ``outputs`` asked for, encoded as ``mtdense predict`` writes them."""
    if not outputs:
        return {}
    files = image_files(rgb, pred, panels="panel" in outputs, depth_range=depth_range, alpha=alpha)
    return {f"{name}_png": base64.b64encode(encode_image(f"{name}.png", files[_FILE_OF[name]])).decode("ascii")
            for name in outputs}


def answer(rgb: np.ndarray, pred: Prediction, outputs: Sequence[str], depth_range: tuple[float, float],
           alpha: float) -> dict:
    """The JSON answer for one image, less its timings (see the module docstring)."""
    info = pred.info or DatasetInfo.cityscapes()  # a Prediction without one is of a Cityscapes model
    return {
        "size": [int(pred.seg.shape[0]), int(pred.seg.shape[1])],
        "classes": class_shares(pred.seg, info.classes, info.palette),
        "depth": depth_stats(pred.depth),
        **encode_outputs(rgb, pred, outputs, depth_range, alpha),
    }
