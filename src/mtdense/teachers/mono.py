"""Monocular depth teachers: a depth network exported to ONNX, its map turned into metres.

:class:`MonoDepthTeacher` runs any network with one image in and one map out (Depth Anything V2,
MiDaS, DPT, a metric network, ...) through :class:`~mtdense.teachers.onnx_image.OnnxImageNet`
and resizes its map back to the frame (bilinear). What the map means is told by ``output``:

- ``depth``: depth (metres for a metric network; affine-invariant depth otherwise);
- ``inverse-depth`` / ``disparity``: proportional to ``1 / depth`` (what Depth Anything V2's and
  MiDaS's relative models give; for a metric network, ``inverse-depth`` is ``1 / metres``).

A metric network (``metric=True``) gives metres as they are. A relative one is aligned per frame
to the metric points the frame has (``anchors``: the ``depth/`` folder of the dataset, LiDAR or a
depth camera, or a stereo teacher's output such as ``depth_sgbm/``, all in the folder depth
encoding) by a robust fit of scale and shift in inverse depth (:mod:`mtdense.teachers.align`),
or by one global fit over every frame that has anchors (``align="global"``, for a network whose
scale holds across frames, e.g. a video of one camera). A frame that has no way to metres (no
anchors, too few, or a fit that fails) is skipped and named, never written as if it were metres.
The residual of each frame with anchors (median relative depth error at its anchors) goes into
the summary; a frame above ``max_residual`` is dropped and listed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.data.image import read_image
from mtdense.items import item_failure
from mtdense.teachers.align import AffineFit, MAX_POINTS, fit_inverse_depth, inverse_to_depth, residual, to_inverse
from mtdense.teachers.folder import FrameInput, FrameSkipped, Labels, TeacherContext, TeacherError, read_anchor_depth
from mtdense.teachers.onnx_image import OnnxImageNet, resize_map

__all__ = ["MonoDepthTeacher", "OUTPUTS", "ALIGNS"]

OUTPUTS = ("depth", "inverse-depth", "disparity")
ALIGNS = ("per-frame", "global")


class MonoDepthTeacher:
    """A monocular depth network as a folder teacher (see the module docstring).

    Args:
        net: The network.
        output: What its map holds: ``depth``, ``inverse-depth`` or ``disparity``.
        metric: The map is metric (metres, or 1/m for ``inverse-depth``): no alignment.
        anchors: Folder (under the root) of the metric points: ``depth`` or a teacher's depth output.
        align: ``per-frame`` or ``global``.
        max_residual: Frames whose residual at the anchors is above this (a share: 0.2 = 20%) are
            dropped; ``None`` keeps them all.
        min_anchors: Fewest anchor points for a per-frame fit.
        max_depth: Depths beyond this many metres are written as no value (``None``: up to what
            the 16-bit encoding holds).

    Raises:
        ValueError: A bad setting.
    """

    tasks = ("depth",)

    def __init__(self, net: OnnxImageNet, output: str = "inverse-depth", metric: bool = False, anchors: str = "depth",
                 align: str = "per-frame", max_residual: float | None = 0.2, min_anchors: int = 20,
                 max_depth: float | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if align not in ALIGNS:
            raise ValueError(f"--align must be one of {', '.join(ALIGNS)}, got {align!r}")
        if metric and output == "disparity":
            raise ValueError("--metric with --output disparity: disparity in px is no metric depth without the rig it was "
                             "measured with; drop --metric to align it to the anchors, or export the network's depth")
        if max_residual is not None and not (math.isfinite(max_residual) and max_residual > 0):
            raise ValueError(f"--max-residual is a share of the depth (0.2 = 20%), > 0; got {max_residual}")
        if min_anchors < 2:
            raise ValueError(f"--min-anchors must be >= 2 (a scale and a shift), got {min_anchors}")
        if max_depth is not None and not (math.isfinite(max_depth) and max_depth > 0):
            raise ValueError(f"--max-depth must be > 0 metres, got {max_depth}")
        self.net = net
        self.output = output
        self.metric = bool(metric)
        self.anchors = anchors
        self.align = align
        self.max_residual = max_residual
        self.min_anchors = int(min_anchors)
        self.max_depth = max_depth
        self.fit: AffineFit | None = None
        self.fit_frames = 0
        self.root: Path | None = None
        self.split = ""
        self.info = None

    def describe(self) -> dict[str, Any]:
        return {**self.net.describe(), "output": self.output, "metric": self.metric, "anchors": self.anchors,
                "align": None if self.metric else self.align, "max_residual": self.max_residual,
                "min_anchors": self.min_anchors, "max_depth": self.max_depth}

    def state(self) -> dict[str, Any]:
        if self.fit is None:
            return {}
        return {"global_fit": {**self.fit.as_dict(), "frames": self.fit_frames}}

    def _anchor_file(self, name: str) -> Path:
        return self.root / self.anchors / self.split / f"{name}.png"

    def bind(self, context: TeacherContext) -> None:
        self.root, self.split, self.info = context.root, context.split, context.info
        if self.metric:
            return
        folder = context.root / self.anchors / context.split
        anchored = [f for f in context.frames if self._anchor_file(f.name).is_file()]
        if not anchored:
            raise ValueError(f"{folder}: no anchor depth for any frame of split {context.split!r}, so a relative network's "
                             "map cannot become metres; give --anchors FOLDER (LiDAR or depth-camera depth, or a stereo "
                             "teacher's output such as depth_sgbm), or --metric for a network that predicts metres")
        if self.align != "global":
            return
        saved = (context.previous or {}).get("global_fit")
        if saved:
            self.fit = AffineFit(float(saved["scale"]), float(saved["shift"]), int(saved["points"]), int(saved["inliers"]))
            self.fit_frames = int(saved.get("frames", 0))
            return
        self._fit_global(anchored, context.progress)

    def _fit_global(self, anchored: Sequence[Any], progress: bool) -> None:
        from tqdm import tqdm

        per_frame = max(1000, MAX_POINTS // len(anchored))
        rng = np.random.default_rng(0)
        xs, ds = [], []
        batch = max(1, self.net.batch)
        with tqdm(total=len(anchored), desc="global fit", unit="frame", disable=not progress) as bar:
            for i in range(0, len(anchored), batch):
                part, rgbs = [], []
                for f in anchored[i:i + batch]:
                    try:
                        rgbs.append(read_image(f.image, colour_only=True))
                        part.append(f)
                    except Exception as exc:  # reported when the frame itself is labelled
                        if not item_failure(exc):
                            raise
                for f, rgb, raw in zip(part, rgbs, self.net.run(rgbs) if rgbs else []):
                    try:
                        anchor = read_anchor_depth(self._anchor_file(f.name), self.info, rgb.shape[:2], f.image)
                    except Exception as exc:
                        if not item_failure(exc):
                            raise
                        continue
                    x = self._inverse(raw, rgb.shape[:2])
                    valid = (anchor > 0) & np.isfinite(x)
                    xi, di = x[valid], anchor[valid]
                    if xi.size > per_frame:
                        pick = rng.choice(xi.size, per_frame, replace=False)
                        xi, di = xi[pick], di[pick]
                    xs.append(xi)
                    ds.append(di)
                bar.update(len(anchored[i:i + batch]))
        points = sum(x.size for x in xs)
        if points < self.min_anchors:
            raise ValueError(f"{self.root / self.anchors / self.split}: {points} anchor points over the frames that have "
                             f"anchors, fewer than --min-anchors {self.min_anchors}; add anchors or use --metric")
        fit = fit_inverse_depth(np.concatenate(xs), np.concatenate(ds))
        if not fit.scale > 0:
            raise ValueError(f"{self.net.path}: its map falls where the anchors' inverse depth rises (scale {fit.scale:.3g} "
                             f"over {len(xs)} frames); check --output (depth, inverse-depth or disparity)")
        self.fit, self.fit_frames = fit, len(xs)

    def _map(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if raw.shape[0] != 1:
            raise TeacherError(f"{self.net.path}: its output has {raw.shape[0]} channels; a depth teacher needs one map "
                               "(N x 1 x h x w or N x h x w)")
        return resize_map(raw[0], size)

    def _inverse(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The map as inverse-depth-like values at ``size``; NaN where the network gives none."""
        m = self._map(raw, size)
        x = to_inverse(m, self.output)
        bad = ~np.isfinite(m) | ((m <= 0) if self.output == "depth" else False)
        return np.where(bad, np.float32(np.nan), x).astype(np.float32)

    def label(self, batch: Sequence[FrameInput]) -> list[Labels | BaseException]:
        raws = self.net.run([item.rgb for item in batch])
        out: list[Labels | BaseException] = []
        for item, raw in zip(batch, raws):
            try:
                out.append(self._label_one(item, raw))
            except Exception as exc:
                if isinstance(exc, TeacherError) or not item_failure(exc):
                    raise
                out.append(exc)
        return out

    def _label_one(self, item: FrameInput, raw: np.ndarray) -> Labels:
        f, size = item.frame, item.rgb.shape[:2]
        anchor_path = self._anchor_file(f.name)
        anchor = read_anchor_depth(anchor_path, self.info, size, f.image) if anchor_path.is_file() else None
        info: dict[str, Any] = {}
        if self.metric:
            m = self._map(raw, size)
            m = np.where(np.isfinite(m), m, 0).astype(np.float32)
            depth = np.where(m > 0, m, 0).astype(np.float32) if self.output == "depth" else inverse_to_depth(m)
        else:
            x = self._inverse(raw, size)
            if self.align == "per-frame":
                if anchor is None:
                    raise FrameSkipped(f"{f.image}: no anchor depth {anchor_path}, so the relative map has no way to "
                                       "metres; add anchors for it, or use --align global", "no_anchors")
                valid = (anchor > 0) & np.isfinite(x)
                n = int(valid.sum())
                if n < self.min_anchors:
                    raise FrameSkipped(f"{f.image}: {n} anchor points in {anchor_path}, fewer than --min-anchors "
                                       f"{self.min_anchors}, so the relative map has no way to metres; add anchors, "
                                       "lower --min-anchors or use --align global", "no_anchors")
                try:
                    fit = fit_inverse_depth(x[valid], anchor[valid])
                except ValueError as exc:
                    raise FrameSkipped(f"{f.image}: no fit to its anchors ({exc})", "fit") from exc
                if not fit.scale > 0:
                    raise FrameSkipped(f"{f.image}: the network's map falls where the anchors' inverse depth rises (scale "
                                       f"{fit.scale:.3g}); check --output (depth, inverse-depth or disparity) and "
                                       f"{anchor_path}", "fit")
            else:
                fit = self.fit
            info.update(scale=fit.scale, shift=fit.shift)
            depth = np.where(np.isfinite(x), fit.depth(np.nan_to_num(x)), 0).astype(np.float32)
        if self.max_depth is not None:
            depth[depth > self.max_depth] = 0
        if anchor is not None and (anchor > 0).any():
            valid = anchor > 0
            r = residual(depth[valid], anchor[valid])
            info.update(residual=r, anchors=int(valid.sum()))
            if self.max_residual is not None and r > self.max_residual:
                raise FrameSkipped(f"{f.image}: fit residual {r:.3f} (median relative depth error at its {int(valid.sum())} "
                                   f"anchor points) is above --max-residual {self.max_residual:g}; check {anchor_path} "
                                   "or raise --max-residual", "residual", info)
        return Labels({"depth": depth}, info)
