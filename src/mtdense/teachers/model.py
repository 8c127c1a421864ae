"""Segmentation pseudo-labels: a trained mtdense model labels the images that have no annotation.

The model's confident pixels become labels in the Cityscapes format
(``ROOT/OUT/SPLIT/CITY/{name}_gtFine_labelIds.png``, label ids); pixels whose winning class has
a softmax probability under the threshold get label id 0 ("unlabeled", train id 255), which
training ignores. A training split can then mix real and teacher labels ("asymmetric
annotations": where a label is missing, a teacher supplies it).

:class:`PseudoLabeler` follows the classes of the model's dataset description (any class count;
its class indices, 255 where unsure). :func:`pseudo_label_split` writes the Cityscapes layout,
whose label-id files exist only for the 19 Cityscapes classes: a model of other classes is
refused there, by name.

    >>> labeler = PseudoLabeler("runs/seed/model.pth", threshold=0.9)
    >>> summary = pseudo_label_split("data/cityscapes", labeler, split="train_extra", out="gtPseudo")
    >>> print(summary.format())

Real annotations are never replaced: each output folder keeps a list of the files it wrote in
``ROOT/OUT/SPLIT_pseudo_labels.json``, and a ``gtFine`` label not on that list is a real one.

:func:`pseudo_label_kitti` does the same for a KITTI root: the frames without a semantic label
(the depth frames) get ``ROOT/OUT/PART/NAME.png`` in the encoding of KITTI's ``semantic/``, which
``data.sources: {seg: [semantic, OUT]}`` (:mod:`mtdense.data.kitti`) trains on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtdense.data.labels import IGNORE_INDEX, train_ids_to_label_ids
from mtdense.data.image import read_image
from mtdense.io import write_json_atomic, write_png_atomic
from mtdense.items import item_failure, item_message
from mtdense.teachers.layout import check_folder_name

__all__ = ["PseudoLabeler", "PseudoLabelSummary", "pseudo_label_split", "pseudo_label_kitti", "manifest_path",
           "kitti_manifest_path", "REAL_LABEL_FOLDER"]

REAL_LABEL_FOLDER = "gtFine"
"""Where the real fine annotations live."""


def manifest_path(root: str | Path, out: str, split: str) -> Path:
    """``ROOT/OUT/SPLIT_pseudo_labels.json``: the record of the pseudo-labels in ``ROOT/OUT``."""
    return Path(root) / out / f"{split}_pseudo_labels.json"


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path}: unreadable pseudo-label record ({exc}); restore it, or delete it together with the labels it lists"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("labelled", []), list):
        raise ValueError(f"{path}: not a pseudo-label record (no 'labelled' list); restore it or delete it with its labels")
    return data


class PseudoLabeler:
    """A segmentation model that labels an image where it is confident.

    Args:
        checkpoint: A checkpoint (anything :func:`mtdense.load_model` reads) or a model whose
            ``forward`` returns ``{"seg": B x K x h x w logits, ...}``.
        threshold: Least softmax probability of the winning class to keep a pixel, 0..1
            (0 keeps every pixel).
        size: Network input ``(H, W)``; logits are resized back to each image's size.
            ``None``: each image at its own size.
        device: ``"cpu"`` or ``"cuda"``.

    Attributes:
        info: The model's :class:`~mtdense.data.description.DatasetInfo` (its class names).
    """

    def __init__(
        self,
        checkpoint: str | Path | nn.Module,
        threshold: float = 0.9,
        size: tuple[int, int] | None = None,
        device: str | torch.device = "cpu",
    ):
        from mtdense.inference import Predictor  # on use: it pulls in torchvision transforms

        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a softmax probability, 0..1; got {threshold}")
        self.threshold = float(threshold)
        self.checkpoint = None if isinstance(checkpoint, nn.Module) else str(Path(checkpoint).resolve())
        self.predictor = Predictor(checkpoint, device=device, size=size)
        self.info = self.predictor.info

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Train ids and their confidence for one image.

        Args:
            image: H x W x 3 uint8 RGB.

        Returns:
            ``(train_ids, confidence)``: H x W uint8 argmax class indices ``0..K-1`` (the model's
            classes; for Cityscapes the train ids) and H x W float32 softmax probability of
            that class, both at the image's size.
        """
        rgb = self.predictor._to_rgb(image)
        logits = self.predictor.model(self.predictor.preprocess([rgb]))["seg"].float()
        if tuple(logits.shape[-2:]) != rgb.shape[:2]:
            logits = F.interpolate(logits, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        train_ids = logits.argmax(1)[0]
        confidence = logits.softmax(1).amax(1)[0]
        return train_ids.to(torch.uint8).cpu().numpy(), confidence.cpu().numpy()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """H x W uint8 class indices, 255 (ignore) where the confidence is under the threshold."""
        train_ids, confidence = self.predict(image)
        return np.where(confidence >= self.threshold, train_ids, np.uint8(IGNORE_INDEX)).astype(np.uint8)


@dataclass
class PseudoLabelSummary:
    """What :func:`pseudo_label_split` did.

    Attributes:
        split: The split.
        out_dir: ``ROOT/OUT/SPLIT``.
        frames: Images in the split (after ``limit``).
        labelled: Label files written in this run.
        annotated: Images skipped because they have a real annotation.
        kept: Images skipped because an earlier run labelled them.
        threshold: The confidence threshold.
        pixels: Pixels of the images labelled in this run.
        kept_pixels: Of those, pixels at or above the threshold (the rest are label id 0).
        class_pixels: Kept pixels per class name (the model's classes).
        seconds: Wall time.
        failed: Images not labelled: image path -> one-line message naming the file and the fix.
    """

    split: str
    out_dir: Path
    frames: int
    labelled: int
    annotated: int
    kept: int
    threshold: float
    pixels: int = 0
    kept_pixels: int = 0
    class_pixels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def kept_share(self) -> float | None:
        """Share of the labelled pixels kept (0..1); None when nothing was labelled."""
        return self.kept_pixels / self.pixels if self.pixels else None

    def class_shares(self) -> dict[str, float]:
        """Each class's share of the kept pixels, largest first."""
        total = sum(self.class_pixels.values())
        shares = {k: v / total for k, v in self.class_pixels.items() if v} if total else {}
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    def format(self) -> str:
        """A short human-readable report."""
        lines = [
            f"pseudo-labels for {self.split}: {self.frames} images, {self.labelled} labelled, {self.annotated} skipped "
            f"(real annotation), {self.kept} kept from an earlier run, {len(self.failed)} failed ({self.seconds:.1f} s) "
            f"-> {self.out_dir}"
        ]
        if self.kept_share is not None:
            top = ", ".join(f"{k} {100 * v:.1f}%" for k, v in list(self.class_shares().items())[:6])
            lines.append(f"confident pixels (p >= {self.threshold:g}): {100 * self.kept_share:.1f}%; the rest are label id 0 (ignored)")
            lines.append(f"classes of the kept pixels: {top or '-'}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split, "out_dir": str(self.out_dir), "frames": self.frames, "labelled": self.labelled,
            "annotated": self.annotated, "kept": self.kept, "threshold": self.threshold, "pixels": self.pixels,
            "kept_pixels": self.kept_pixels, "kept_share": self.kept_share, "class_shares": self.class_shares(),
            "seconds": self.seconds, "failed": self.failed,
        }


def _save_record(path: Path, labeler: PseudoLabeler, summary: PseudoLabelSummary, counts: np.ndarray, start: float,
                 labelled: set[str], **fields: Any) -> None:
    """Bring ``summary``'s time and pixel counts up to date and write the record of a folder's
    pseudo-labels: ``fields``, the labeller's settings, the names labelled and the summary."""
    info = labeler.info
    summary.seconds = time.perf_counter() - start
    summary.kept_pixels = int(counts[: info.num_classes].sum())
    summary.class_pixels = {name: int(counts[i]) for i, name in enumerate(info.classes)}
    write_json_atomic(path, {
        **fields, "checkpoint": labeler.checkpoint, "threshold": labeler.threshold,
        "size": list(labeler.predictor.size) if labeler.predictor.size else None,
        "labelled": sorted(labelled), "summary": summary.as_dict(),
    })


def _label_frame(labeler: PseudoLabeler, image: Path, target: Path, summary: PseudoLabelSummary, counts: np.ndarray,
                 on_failure: Callable[[str], None] | None) -> bool:
    """Label one image into ``target`` (label ids) and count it in ``summary`` and ``counts``; an
    image that fails is recorded in ``summary.failed`` (and reported) and False returned."""
    try:
        train_ids = labeler(read_image(image, colour_only=True))
    except Exception as exc:
        if not item_failure(exc):
            raise
        summary.failed[str(image)] = item_message(exc, image)
        if on_failure is not None:
            on_failure(summary.failed[str(image)])
        return False
    write_png_atomic(target, train_ids_to_label_ids(train_ids))
    summary.labelled += 1
    summary.pixels += train_ids.size
    counts += np.bincount(train_ids.ravel(), minlength=256)
    return True


def pseudo_label_split(
    root: str | Path,
    labeler: PseudoLabeler,
    split: str = "train_extra",
    out: str = REAL_LABEL_FOLDER,
    overwrite: bool = False,
    limit: int | None = None,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
) -> PseudoLabelSummary:
    """Write pseudo-labels for the images of a split that have no fine annotation.

    For every ``leftImg8bit`` image, writes ``ROOT/OUT/SPLIT/CITY/{name}_gtFine_labelIds.png``
    (uint8 label ids; label id 0 where the model is not confident) and records it in
    ``ROOT/OUT/SPLIT_pseudo_labels.json`` (the names, the checkpoint, the threshold and the
    summary of the last run that labelled anything). Images with a real annotation (``ROOT/gtFine/SPLIT/CITY/{name}_gtFine_labelIds.png``
    that no pseudo-label run wrote) are skipped; with ``overwrite`` they are labelled too, into
    another ``out`` folder only: a real annotation is never replaced. Labels written by an
    earlier run are kept unless ``overwrite``, so an interrupted run resumes. An image that
    fails (unreadable, or too large for the memory) is listed in the summary's ``failed`` and
    the others go on.

    Args:
        root: Cityscapes root with ``leftImg8bit/``.
        labeler: The :class:`PseudoLabeler`.
        split: Split folder name (e.g. ``train_extra``).
        out: Label folder under ``root``; ``gtFine`` puts the pseudo-labels beside the real
            ones, another name (``gtPseudo``) keeps them apart (train on them with
            ``label_source``).
        overwrite: Relabel images labelled by an earlier run, and label annotated images
            (into a folder other than ``gtFine``).
        limit: Only the first ``limit`` images (sorted by name).
        progress: Show a tqdm progress bar.
        on_failure: Called with each failed image's one-line message as it fails.

    Returns:
        A :class:`PseudoLabelSummary`.

    Raises:
        FileNotFoundError: no images in the split. ValueError: a model whose classes are not the
            19 Cityscapes classes (the files are Cityscapes label ids), an unreadable record, or
            a bad ``out`` name. WriteError: an output that cannot be written (it would fail for
            every image).
    """
    from tqdm import tqdm

    from mtdense.data.cityscapes import frame_file, list_frames
    from mtdense.outputs import has_cityscapes_classes

    info = labeler.info
    if not has_cityscapes_classes(info):
        raise ValueError(
            f"the model's {info.num_classes} classes ({', '.join(info.classes)}) are not the 19 Cityscapes classes; "
            f"pseudo-labels are written as Cityscapes label ids ({out}/SPLIT/CITY/NAME_gtFine_labelIds.png), which "
            f"exist only for those. Label other data with PseudoLabeler in Python (class indices, 255 where unsure)"
        )
    check_folder_name(out, "gtPseudo")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    root = Path(root)
    frames = list_frames(root, split, depth_source=None, require_labels=False)
    if not frames:
        raise FileNotFoundError(f"{root / 'leftImg8bit' / split}: no *_leftImg8bit.png images; check the root and --split")
    frames = frames[:limit] if limit is not None else frames

    record_path = manifest_path(root, out, split)
    record = _read_manifest(record_path)
    ours = set(record.get("labelled", []))
    # Pseudo-labels written into gtFine by an earlier run are not real annotations.
    pseudo_in_gtfine = ours if out == REAL_LABEL_FOLDER else set(_read_manifest(manifest_path(root, REAL_LABEL_FOLDER, split)).get("labelled", []))
    out_dir = root / out / split
    summary = PseudoLabelSummary(split=split, out_dir=out_dir, frames=len(frames), labelled=0, annotated=0, kept=0, threshold=labeler.threshold)
    counts = np.zeros(256, dtype=np.int64)
    start = time.perf_counter()

    def save_record() -> None:
        _save_record(record_path, labeler, summary, counts, start, ours, split=split, out=out)

    try:
        for f in tqdm(frames, desc=f"pseudo-label {split}", unit="image", disable=not progress):
            real = frame_file(root, REAL_LABEL_FOLDER, split, f.city, f.name, "label")
            target = frame_file(root, out, split, f.city, f.name, "label")
            annotated = real.is_file() and f.name not in pseudo_in_gtfine
            if annotated and (not overwrite or target == real):
                summary.annotated += 1
                continue
            if target.is_file() and not overwrite:
                summary.kept += 1
                continue
            if not _label_frame(labeler, f.image, target, summary, counts, on_failure):
                continue
            ours.add(f.name)
            if summary.labelled % 100 == 0:
                save_record()
    finally:
        if summary.labelled or not record_path.is_file():  # a run that labels nothing keeps the last record
            save_record()
    summary.seconds = time.perf_counter() - start
    return summary


def kitti_manifest_path(root: str | Path, out: str) -> Path:
    """``ROOT/OUT/pseudo_labels.json``: the record of the KITTI pseudo-labels in ``ROOT/OUT``."""
    return Path(root) / out / "pseudo_labels.json"


def pseudo_label_kitti(
    root: str | Path,
    labeler: PseudoLabeler,
    split: str = "train",
    out: str = "semantic_pseudo",
    overwrite: bool = False,
    limit: int | None = None,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
    model_id: str | None = None,
) -> PseudoLabelSummary:
    """Write pseudo-labels for the frames of a KITTI split that have no semantic label.

    Every such frame (a depth frame) gets ``ROOT/OUT/PART/NAME.png`` (Cityscapes label ids, 0
    where the model is not confident; ``PART`` ``train``/``val``, ``NAME`` ``DRIVE_FRAME``), listed
    in ``ROOT/OUT/pseudo_labels.json`` with the checkpoint, the threshold and ``model_id``. A
    frame listed twice in the split (``*N``) is labelled once; a labelled frame of the semantic
    benchmark is skipped. Labels written by an earlier run are kept (the run resumes) unless
    ``overwrite``, or unless ``model_id`` is given and differs from the record's: labels of
    another model are relabelled, never mixed in. An unreadable frame is listed in ``failed``
    and the others go on.

    Args:
        root: The KITTI root.
        labeler: The :class:`PseudoLabeler` (a model of the 19 Cityscapes classes).
        split: The split whose frames are labelled (e.g. ``train``; parts joined by ``+``).
        out: The source folder under ``root`` (not ``semantic`` or a KITTI folder).
        overwrite: Relabel frames labelled by an earlier run.
        limit: Only the first ``limit`` frames to label (in split order).
        progress: Show a tqdm progress bar.
        on_failure: Called with each failed frame's one-line message as it fails.
        model_id: What identifies the labelling model (a recipe stage passes its checkpoint's
            SHA-256); recorded, and compared with the record of an earlier run.

    Returns:
        A :class:`PseudoLabelSummary` (``annotated``: frames skipped for their real label).

    Raises:
        ValueError: A model whose classes are not the 19 Cityscapes classes, a bad ``out``, an
            unreadable record, or what :func:`~mtdense.data.kitti.list_kitti_frames` raises.
        WriteError: An output that cannot be written.
    """
    from tqdm import tqdm

    from mtdense.data.kitti import REAL_SEG_SOURCE, check_kitti_sources, kitti_label_path, list_kitti_frames
    from mtdense.outputs import has_cityscapes_classes

    info = labeler.info
    if not has_cityscapes_classes(info):
        raise ValueError(f"the model's {info.num_classes} classes ({', '.join(info.classes)}) are not the 19 Cityscapes "
                         f"classes of KITTI's semantic labels; label KITTI with a model trained on them")
    check_folder_name(out, "semantic_pseudo")
    check_kitti_sources({"seg": [REAL_SEG_SOURCE, out]})
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    root = Path(root)
    frames, seen = [], set()
    for f in list_kitti_frames(root, split):
        if (f.split, f.name) not in seen:
            seen.add((f.split, f.name))
            frames.append(f)
    annotated = sum(f.semantic is not None for f in frames)
    todo = [f for f in frames if f.semantic is None]
    todo = todo[:limit] if limit is not None else todo

    record_path = kitti_manifest_path(root, out)
    record = _read_manifest(record_path)
    if model_id is not None and record and record.get("model_id") != model_id:
        overwrite, record = True, {}  # another model's labels: relabel every frame
    ours = set(record.get("labelled", []))
    summary = PseudoLabelSummary(split=split, out_dir=root / out, frames=len(todo) + annotated, labelled=0,
                                 annotated=annotated, kept=0, threshold=labeler.threshold)
    counts = np.zeros(256, dtype=np.int64)
    start = time.perf_counter()

    def save_record() -> None:
        _save_record(record_path, labeler, summary, counts, start, ours, format="kitti", split=split, out=out,
                     model_id=model_id)

    try:
        for f in tqdm(todo, desc=f"pseudo-label kitti {split}", unit="frame", disable=not progress):
            key = f"{f.split}/{f.name}"
            target = kitti_label_path(root, out, f)
            if target.is_file() and not overwrite and key in ours:
                summary.kept += 1
                continue
            if not _label_frame(labeler, f.image, target, summary, counts, on_failure):
                continue
            ours.add(key)
            if summary.labelled % 100 == 0:
                save_record()
    finally:
        if summary.labelled or not record_path.is_file():
            save_record()
    summary.seconds = time.perf_counter() - start
    return summary
