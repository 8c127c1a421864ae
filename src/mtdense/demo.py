"""The end-to-end demo: generate a synthetic city, train on it, evaluate on its val split.

Everything runs on a CPU in minutes (``configs/synthetic_demo.yaml``), from random weights,
so it shows the whole pipeline (stereo depth ground truth, joint augmentation, the two-task
loss, staged one-cycle training, split-level metrics, pictures) without any download::

    from mtdense.demo import run_demo
    result = run_demo("runs/demo")
    print(result.metrics["miou"], result.metrics["abs_rel"], result.wall_s)

The city also holds the exact surface normals of what it renders, so the same demo trains the
three-task model (``tasks=("seg", "depth", "normals")``, ``mtdense demo --tasks seg,depth,normals``),
or any subset of the tasks.

The val frames are generated with the train frames but never used for training or model
selection: the figures come from the last checkpoint.

:func:`run_asymmetric` (``mtdense demo --asymmetric``) runs the experiment of learning from
asymmetric annotations on the same city: segmentation labels on a share (20%) of the training
frames, depth on all; (a) the demo model on those alone, (b) a larger teacher (MobileNetV3-Large)
trained on the labelled frames labels the others and the demo model learns from real + teacher
labels (``data.sources``), (c) the demo model on all real labels, the ceiling::

    from mtdense.demo import AsymmetricSettings, run_asymmetric
    result = run_asymmetric("runs/asymmetric", AsymmetricSettings(epochs=10))
    print(format_asymmetric(result))
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.io import atomic_path, write_json_atomic, write_text_atomic

__all__ = ["DemoResult", "run_demo", "save_prediction_figure", "task_overrides", "DEMO_CONFIG", "DEMO_TASKS",
           "AsymmetricSettings", "AsymmetricRow", "AsymmetricResult", "asymmetric_folder", "run_asymmetric",
           "format_asymmetric"]

DEMO_CONFIG = "synthetic_demo"
DEMO_TASKS = ("seg", "depth", "normals")
"""The tasks the synthetic city has labels for."""
_CHANNELS = {"seg": 19, "depth": 1, "normals": 3}
# Fixed weight of a task the recipe names no weight for. Normals: the cosine loss (1 - cos) starts
# near 1 and ends near 0.1, the size of the cross-entropy late in the demo, so 1:1 with it.
_DEFAULT_WEIGHT = {"normals": 1.0}


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out_dir: The demo folder.
        metrics: Val-split metrics (see :func:`mtdense.metrics.metrics_to_dict`).
        wall_s: Wall time of the whole demo (generation + training + evaluation), seconds.
        checkpoint: The evaluated checkpoint.
        figures: The prediction pictures.
        report: ``report.md``.
    """

    out_dir: Path
    metrics: dict[str, Any]
    wall_s: float
    checkpoint: Path
    figures: list[Path]
    report: Path


def save_prediction_figure(
    image: np.ndarray,
    seg_pred: np.ndarray,
    seg_gt: np.ndarray,
    depth_pred: np.ndarray,
    depth_gt: np.ndarray,
    path: str | Path,
    title: str | None = None,
    normals_pred: np.ndarray | None = None,
    normals_gt: np.ndarray | None = None,
) -> Path:
    """Save image | predicted seg | ground-truth seg | predicted depth | ground-truth depth
    (| predicted normals | ground-truth normals).

    Args:
        image: H x W x 3 uint8 RGB.
        seg_pred, seg_gt: H x W train ids (255 = ignore, drawn black).
        depth_pred, depth_gt: H x W metres (ground truth 0 = invalid, drawn black).
        path: Output PNG.
        title: Figure title.
        normals_pred, normals_gt: H x W x 3 unit normals (ground truth all zero = none, drawn
            black), drawn by :func:`mtdense.viz.colorize_normals` where given.
    """
    from matplotlib.figure import Figure

    from mtdense.data.labels import colorize_train_ids
    from mtdense.viz import colorize_depth, colorize_normals

    valid = depth_gt > 0
    lo, hi = (np.percentile(depth_gt[valid], [2, 98]) if valid.any() else (1.0, 100.0))
    rng = (float(max(lo, 0.5)), float(max(hi, lo + 1.0)))
    gt_col = colorize_depth(depth_gt, rng)
    gt_col[~valid] = 0
    panels = [
        (image, "image"),
        (colorize_train_ids(seg_pred), "segmentation"),
        (colorize_train_ids(seg_gt), "ground truth"),
        (colorize_depth(depth_pred, rng), f"depth ({rng[0]:.0f}-{rng[1]:.0f} m)"),
        (gt_col, "ground-truth depth"),
    ]
    if normals_pred is not None:
        panels.append((colorize_normals(normals_pred), "normals"))
    if normals_gt is not None:
        panels.append((colorize_normals(normals_gt), "ground-truth normals"))
    h, w = image.shape[:2]
    fig = Figure(figsize=(3.2 * len(panels), 3.2 * h / w + 0.6), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (img, label) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


def _prediction_figures(model_path: Path, root: Path, out_dir: Path, count: int) -> list[Path]:
    from mtdense.data.cityscapes import CityscapesDataset
    from mtdense.inference import Predictor

    predictor = Predictor(model_path)
    with_normals = "normals" in predictor.runtime.tasks
    dataset = CityscapesDataset(root, "val", load_normals=with_normals)
    paths = []
    for i in np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int):
        sample = dataset[int(i)]
        pred = predictor.predict(sample["image"])
        paths.append(
            save_prediction_figure(
                sample["image"], pred.seg, sample["seg"], pred.depth, sample["depth"],
                out_dir / "pictures" / f"{sample['name']}.png", title=f"val {sample['name']}",
                normals_pred=pred.normals, normals_gt=sample.get("normals"),
            )
        )
    return paths


def _report(out_dir: Path, metrics: dict[str, Any], wall_s: float, timings: dict[str, float], recipe: Any,
            checkpoint: Path, figures: list[Path]) -> Path:
    from mtdense.metrics import format_metrics

    g = recipe.data.generate
    losses = {"seg": "cross-entropy", "depth": f"{recipe.loss.depth} depth", "normals": f"{recipe.loss.normals} normals"}
    stages = "; ".join(
        f"{s.name}: {s.epochs} epochs, batch {s.batch_size}, lr {s.lr:g}, size {s.size or s.scale}" for s in recipe.stages
    )
    lines = [
        "# mtdense demo",
        "",
        f"Synthetic city: {g.n_train} train + {g.n_val} val frames of {g.size[0]}x{g.size[1]} (seed {g.seed}), "
        f"depth from the generated stereo disparity.",
        f"Model: {recipe.model.encoder} + {recipe.model.decoder_channels}-channel Light-Weight RefineNet, "
        f"{'ImageNet weights' if recipe.model.pretrained is True else 'random init'}; tasks "
        f"{', '.join(recipe.model.tasks)}; loss: {' + '.join(losses[t] for t in recipe.model.tasks if t in losses)} "
        f"({recipe.loss.weighting} weighting).",
        f"Training: {stages}.",
        "",
        f"Evaluated on the val split (never used for training or checkpoint selection), checkpoint `{checkpoint}`:",
        "",
        "```",
        format_metrics(metrics),
        "```",
        "",
        f"Wall time: {wall_s / 60:.1f} min in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ").",
        "",
        "Pictures (image | segmentation | ground truth | depth | ground-truth depth"
        + (" | normals | ground-truth normals" if "normals" in recipe.model.tasks else "") + "):",
        "",
        *[f"![{p.stem}]({p.relative_to(out_dir)})" for p in figures],
        "",
        "Training curves: `tensorboard --logdir " + str(out_dir / "train") + "`.",
        "",
    ]
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def task_overrides(recipe, tasks: Sequence[str]) -> list[str]:
    """``--set`` overrides that make ``recipe`` train ``tasks`` (a subset of :data:`DEMO_TASKS`):
    ``model.tasks`` with their channels, ``loss.weights`` for them (the recipe's, 1.0 for normals
    where it names none), and the settings of a task left out switched off (ENet class weights
    without seg, the depth head's start value without depth).

    Raises:
        ValueError: An unknown task, one named twice, or none.
    """
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in DEMO_TASKS]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"--tasks {','.join(tasks)}: give one or more of {', '.join(DEMO_TASKS)}, each once "
                         f"(e.g. --tasks seg,depth,normals)" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    ordered = [t for t in DEMO_TASKS if t in tasks]
    weights = {t: recipe.loss.weights.get(t, _DEFAULT_WEIGHT.get(t, 1.0)) for t in ordered}
    out = ["model.tasks={" + ", ".join(f"{t}: {_CHANNELS[t]}" for t in ordered) + "}",
           "loss.weights={" + ", ".join(f"{t}: {w:g}" for t, w in weights.items()) + "}"]
    if "seg" not in ordered:
        out.append("loss.class_weights=null")
    if "depth" not in ordered:
        out.append("model.depth_init_m=null")
    return out


def run_demo(
    out_dir: str | Path = "runs/demo",
    config: str | Path = DEMO_CONFIG,
    overrides: list[str] | None = None,
    num_pictures: int = 4,
    progress: bool = True,
    tasks: Sequence[str] | None = None,
) -> DemoResult:
    """Generate the synthetic city (unless already there), train, evaluate on val, report.

    Args:
        out_dir: Demo folder: ``data/`` (the city), ``train/`` (the run), ``metrics.json``,
            ``pictures/``, ``report.md``.
        config: The recipe (default the packaged ``synthetic_demo``); ``data.root`` is set to
            ``{out_dir}/data``.
        overrides: Extra ``--set`` style overrides (applied last: they win over ``tasks``).
        num_pictures: Val frames drawn as prediction pictures.
        progress: Progress bars.
        tasks: The tasks to train, a subset of :data:`DEMO_TASKS` (:func:`task_overrides`);
            ``None``: the recipe's (segmentation and depth).

    Returns:
        A :class:`DemoResult`.
    """
    from mtdense.metrics import evaluate_split
    from mtdense.train import load_recipe, train
    from mtdense.train.prepare import prepare_data

    start = time.perf_counter()
    out_dir = Path(out_dir)
    data_root = out_dir / "data"
    overrides = [f"data.root={data_root}", *(overrides or []), f"trainer.progress_bar={str(progress).lower()}"]
    recipe, text = load_recipe(config, overrides)
    if tasks is not None:
        overrides = [overrides[0], *task_overrides(recipe, tasks), *overrides[1:]]
        recipe, text = load_recipe(config, overrides)
    if recipe.data.generate is None:
        raise ValueError(f"{config}: the demo recipe must have data.generate (how to generate the synthetic city)")
    timings = {}
    t = time.perf_counter()
    prepare_data(recipe)
    timings["data"] = time.perf_counter() - t
    t = time.perf_counter()
    result = train(recipe, out_dir / "train", recipe_text=text, overrides=overrides)
    timings["training"] = time.perf_counter() - t
    t = time.perf_counter()
    checkpoint = result.final
    metrics = evaluate_split(checkpoint, data_root, "val", out_dir=out_dir, num_workers=recipe.data.num_workers, progress=progress)
    figures = _prediction_figures(checkpoint, data_root, out_dir, num_pictures)
    timings["evaluation"] = time.perf_counter() - t
    wall = time.perf_counter() - start
    metrics_path = out_dir / "metrics.json"
    write_json_atomic(metrics_path, {**metrics, "wall_s": round(wall, 1), "checkpoint": str(checkpoint)})
    report = _report(out_dir, metrics, wall, timings, recipe, checkpoint, figures)
    return DemoResult(out_dir, metrics, wall, checkpoint, figures, report)


# -- learning from asymmetric annotations ------------------------------------------------------

TEACHER_MASKS = "masks_teacher"
"""The folder the teacher's masks of the asymmetric experiment are written to."""
_RECORD = "asymmetric_data.json"  # written last by asymmetric_folder: the folder is complete


@dataclass
class AsymmetricSettings:
    """The sizes of the asymmetric-annotation experiment (:func:`run_asymmetric`).

    Attributes:
        n_train, n_val: Frames of the synthetic city's train and val splits.
        size: Frame size ``(H, W)`` (the training size too: whole frames).
        seed: City seed; also draws which training frames keep their segmentation labels.
        share: Share of the training frames that keep their segmentation labels (depth: all).
        epochs: Epochs of each demo-model run (a, b's student, c).
        teacher_epochs: Epochs of the teacher on the labelled frames alone.
        teacher_encoder: The teacher's encoder.
        threshold: Least softmax probability of a teacher pixel kept (``data teacher --threshold``).
        teacher_weight: Loss weight of the teacher's masks in (b) (``data.teacher_weight.seg``).
        class_share: Keep at least this share of each class's teacher pixels (``data teacher
            --class-share``; ``None``: one threshold).
    """

    n_train: int = 300
    n_val: int = 60
    size: tuple[int, int] = (128, 256)
    seed: int = 1
    share: float = 0.2
    epochs: int = 10
    teacher_epochs: int = 80
    teacher_encoder: str = "mobilenet_v3_large"
    threshold: float = 0.9
    teacher_weight: float = 1.0
    class_share: float | None = 0.5

    def check(self) -> None:
        """Raises ValueError naming the setting and its valid range."""
        if self.n_train < 2 or self.n_val < 1:
            raise ValueError(f"--frames {self.n_train} / --val-frames {self.n_val}: give at least 2 training frames and 1 "
                             f"val frame")
        if not 0 < self.share < 1:
            raise ValueError(f"--share {self.share:g}: the share of training frames with segmentation labels must be "
                             f"between 0 and 1 (exclusive), e.g. 0.2")
        if round(self.share * self.n_train) < 1:
            raise ValueError(f"--share {self.share:g} of {self.n_train} frames labels none; raise --share or --frames")
        if self.epochs < 1 or self.teacher_epochs < 1:
            raise ValueError(f"--epochs {self.epochs} / --teacher-epochs {self.teacher_epochs}: give at least 1")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"--threshold {self.threshold:g}: a probability in [0, 1]")
        if not self.teacher_weight >= 0:
            raise ValueError(f"--teacher-weight {self.teacher_weight:g}: give a weight >= 0")
        if self.class_share is not None and not 0 < self.class_share <= 1:
            raise ValueError(f"--class-share {self.class_share:g}: the share of each class's pixels to keep, in (0, 1]")


@dataclass
class AsymmetricRow:
    """One row of the experiment.

    Attributes:
        key: ``a``, ``b`` or ``c``.
        label: What was trained.
        metrics: Val-split metrics of its final checkpoint (real labels only).
        minutes: Training time of the row (for b: the teacher's training and labelling included).
        checkpoint: The evaluated checkpoint.
    """

    key: str
    label: str
    metrics: dict[str, Any]
    minutes: float
    checkpoint: Path

    @property
    def miou(self) -> float | None:
        return self.metrics.get("miou")

    @property
    def abs_rel(self) -> float | None:
        return self.metrics.get("abs_rel")


@dataclass
class AsymmetricResult:
    """What :func:`run_asymmetric` produced.

    Attributes:
        out_dir: The experiment folder.
        settings: The sizes used.
        rows: Rows a, b, c.
        teacher: The teacher's own val metrics, checkpoint and labelling summary.
        gap_closed: ``(b - a) / (c - a)`` of mIoU (``None`` where c is not above a).
        report: ``asymmetric.md``.
    """

    out_dir: Path
    settings: AsymmetricSettings
    rows: list[AsymmetricRow]
    teacher: dict[str, Any]
    gap_closed: float | None
    report: Path


def asymmetric_folder(city: str | Path, root: str | Path, share: float, seed: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Write a synthetic city (Cityscapes layout) as a ``folder`` dataset with segmentation labels on
    a share of the training frames.

    Splits: ``train`` (every training frame, depth on all, masks on ``share`` of them drawn with
    ``seed``), ``train_labelled`` (those frames alone), ``train_full`` (every frame, all masks: the
    ceiling), ``val`` (all labels). Masks hold the 19 Cityscapes train ids (255 = ignore), depth is
    16-bit ``depth_m * 256`` (0 = none), as ``dataset.yaml`` says. A folder written before with the
    same city, share and seed is kept as it is.

    Returns:
        The record written last to ``ROOT/asymmetric_data.json``: ``city``, ``share``, ``seed``,
        ``frames`` per split and ``labelled`` (the names of the training frames with masks).

    Raises:
        ValueError: ``root`` holds something else (the message says what to do).
    """
    import json

    import cv2

    from mtdense.data.cityscapes import CityscapesDataset
    from mtdense.data.depth import depth_to_png16
    from mtdense.data.labels import IGNORE_INDEX, TRAIN_CLASS_NAMES, TRAIN_PALETTE
    from tqdm import tqdm

    from mtdense.io import write_png_atomic, write_yaml_atomic

    city, root = Path(city), Path(root)
    train = CityscapesDataset(city, "train")
    val = CityscapesDataset(city, "val")
    n = len(train)
    rng = np.random.default_rng(seed)
    labelled = sorted(int(i) for i in rng.choice(n, size=max(1, round(share * n)), replace=False))
    want = {"city": str(city.resolve()), "share": float(share), "seed": int(seed)}
    record_path = root / _RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if {k: record.get(k) for k in want} == want:
            return record
        raise ValueError(f"{root}: holds the data of another experiment ({ {k: record.get(k) for k in want} }); "
                         f"give another --out, or delete {root}")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: not empty and not a finished experiment folder (no {_RECORD}; an earlier run was "
                         f"interrupted?); delete it, or give another --out")
    write_yaml_atomic(root / "dataset.yaml", {"classes": list(TRAIN_CLASS_NAMES),
                                              "colors": TRAIN_PALETTE.astype(int).tolist(),
                                              "ignore_index": IGNORE_INDEX, "depth_scale": 256.0})
    chosen = set(labelled)
    frames = {"train": n, "train_labelled": len(labelled), "train_full": n, "val": len(val)}
    names = []
    with tqdm(total=n + len(val), desc="folder dataset", unit="frame", disable=not progress) as bar:
        for split, dataset in (("train", train), ("val", val)):
            for i in range(len(dataset)):
                sample = dataset[i]
                name = sample["name"]
                bgr = cv2.cvtColor(sample["image"], cv2.COLOR_RGB2BGR)
                depth = depth_to_png16(sample["depth"])
                seg = np.ascontiguousarray(sample["seg"], dtype=np.uint8)
                if split == "val":
                    targets = {"val": True}
                else:
                    names.append(name)
                    targets = {"train": i in chosen, "train_full": True}
                    if i in chosen:
                        targets["train_labelled"] = True
                for out_split, with_mask in targets.items():
                    write_png_atomic(root / "images" / out_split / f"{name}.png", bgr)
                    write_png_atomic(root / "depth" / out_split / f"{name}.png", depth)
                    if with_mask:
                        write_png_atomic(root / "masks" / out_split / f"{name}.png", seg)
                bar.update(1)
    record = {**want, "frames": frames, "labelled": [names[i] for i in labelled]}
    write_json_atomic(record_path, record)
    return record


_ROWS = {
    "a": "small, seg labels on {pct} of frames",
    "b": "small, real + {teacher} teacher labels",
    "c": "small, seg labels on all frames (ceiling)",
}


def _short(encoder: str) -> str:
    return encoder.replace("mobilenet_v3_", "MobileNetV3-").replace("large", "Large").replace("small", "Small")


def format_asymmetric(result: AsymmetricResult) -> str:
    """The three rows (mIoU, AbsRel, minutes) and the share of the mIoU gap that (b) closes."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [f"{'row':<52} {'mIoU':>7} {'AbsRel':>7} {'minutes':>8}"]
    for r in result.rows:
        absrel = "-" if r.abs_rel is None else f"{r.abs_rel:.3f}"
        lines.append(f"({r.key}) {r.label:<48} {pct(r.miou):>7} {absrel:>7} {r.minutes:>8.1f}")
    t = result.teacher
    lines.append(f"teacher {_short(result.settings.teacher_encoder)} on the labelled frames alone: mIoU "
                 f"{pct(t['metrics'].get('miou'))}; its masks cover {pct(t.get('coverage'))} of the pixels "
                 f"(threshold {result.settings.threshold:g}"
                 + (f", at least {result.settings.class_share:g} of each class)" if result.settings.class_share else ")"))
    if result.gap_closed is None:
        lines.append("gap: none to close, (c) is not above (a) at these sizes")
    else:
        lines.append(f"gap: (b) closes {100 * result.gap_closed:.0f}% of the mIoU gap between (a) and (c)")
    return "\n".join(lines)


def run_asymmetric(
    out_dir: str | Path = "runs/demo_asymmetric",
    settings: AsymmetricSettings | None = None,
    config: str | Path = DEMO_CONFIG,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> AsymmetricResult:
    """The asymmetric-annotation experiment on the synthetic city (see the module docstring).

    Generates the city into ``OUT/city`` (kept if there), writes it as a folder dataset with
    segmentation labels on ``settings.share`` of the training frames into ``OUT/data``
    (:func:`asymmetric_folder`), then trains with the demo recipe (whole frames of
    ``settings.size``, ``settings.epochs`` epochs, validation once at the end): (a) on ``train``;
    the teacher (``settings.teacher_encoder``, ``settings.teacher_epochs`` epochs) on
    ``train_labelled``, which then labels ``train`` into ``masks_teacher/`` (``mtdense data
    teacher --method model``); (b) on ``train`` with ``data.sources: {seg: [masks, masks_teacher]}``;
    (c) on ``train_full``. Each final checkpoint is evaluated on val (real labels). Writes
    ``OUT/asymmetric.json`` and ``OUT/asymmetric.md``.

    Args:
        out_dir: The experiment folder; its ``train/`` must not exist yet.
        settings: Sizes (default :class:`AsymmetricSettings`).
        config: The recipe of every run (default the demo's).
        overrides: ``--set`` overrides applied to every run after the experiment's own (the
            teacher's encoder still wins for the teacher).
        progress: Progress bars.

    Raises:
        ValueError: A bad setting, or an ``OUT/train`` left by an earlier run.
    """
    from mtdense.metrics import evaluate_split
    from mtdense.teachers.folder import label_folder_split
    from mtdense.teachers.model_folder import ModelTeacher
    from mtdense.train import load_recipe, train
    from mtdense.train.prepare import prepare_data

    settings = settings or AsymmetricSettings()
    settings.check()
    out_dir = Path(out_dir)
    runs = out_dir / "train"
    if runs.exists():
        raise ValueError(f"{runs}: holds the runs of an earlier experiment; give another --out, or delete {runs} (the "
                         f"city and data beside it are reused)")
    start = time.perf_counter()
    s = settings
    h, w = s.size
    flag = str(progress).lower()
    city = out_dir / "city"
    generate = f"data.generate={{n_train: {s.n_train}, n_val: {s.n_val}, size: [{h}, {w}], seed: {s.seed}}}"
    city_recipe, _ = load_recipe(config, [f"data.root={city}", generate])
    prepare_data(city_recipe, progress=progress)
    root = out_dir / "data"
    record = asymmetric_folder(city, root, s.share, seed=s.seed, progress=progress)

    def run(name: str, epochs: int, extra: list[str], after: list[str] | None = None) -> tuple[Path, float]:
        sets = [f"data.root={root}", "data.format=folder", "data.generate=null", f"stages.0.size=[{h}, {w}]",
                f"stages.0.epochs={epochs}", f"trainer.check_val_every_n_epoch={epochs}", f"trainer.progress_bar={flag}",
                *extra, *(overrides or []), *(after or [])]
        recipe, text = load_recipe(config, sets)
        t = time.perf_counter()
        result = train(recipe, runs / name, recipe_text=text, overrides=sets)
        return result.final, time.perf_counter() - t

    def score(checkpoint: Path) -> dict[str, Any]:
        return evaluate_split(checkpoint, root, "val", num_workers=0, progress=progress)

    pct = f"{100 * s.share:.0f}%"
    rows: list[AsymmetricRow] = []
    ckpt, seconds = run("a_labelled_only", s.epochs, ["data.train_split=train"])
    rows.append(AsymmetricRow("a", _ROWS["a"].format(pct=pct), score(ckpt), seconds / 60, ckpt))

    teacher_ckpt, teacher_s = run("teacher", s.teacher_epochs, ["data.train_split=train_labelled"],
                                  after=[f"model.encoder={s.teacher_encoder}"])
    t = time.perf_counter()
    teacher = ModelTeacher(teacher_ckpt, tasks=["seg"], threshold=s.threshold, class_share=s.class_share)
    summary = label_folder_split(root, teacher, "model", {"seg": TEACHER_MASKS}, split="train", overwrite=True,
                                 progress=progress)
    label_s = time.perf_counter() - t
    sources = ["data.train_split=train", f"data.sources={{seg: [masks, {TEACHER_MASKS}]}}"]
    if s.teacher_weight != 1.0:
        sources.append(f"data.teacher_weight={{seg: {s.teacher_weight:g}}}")
    ckpt, seconds = run("b_real_and_teacher", s.epochs, sources)
    rows.append(AsymmetricRow("b", _ROWS["b"].format(teacher=_short(s.teacher_encoder)), score(ckpt),
                              (teacher_s + label_s + seconds) / 60, ckpt))

    ckpt, seconds = run("c_all_labels", s.epochs, ["data.train_split=train_full"])
    rows.append(AsymmetricRow("c", _ROWS["c"], score(ckpt), seconds / 60, ckpt))

    coverage = summary.coverage().get("seg")
    teacher_info = {"checkpoint": str(teacher_ckpt), "metrics": score(teacher_ckpt), "coverage": coverage,
                    "minutes_training": teacher_s / 60, "minutes_labelling": label_s / 60}
    a, b, c = (r.miou for r in rows)
    gap = (b - a) / (c - a) if None not in (a, b, c) and c > a else None
    result = AsymmetricResult(out_dir, settings, rows, teacher_info, gap, out_dir / "asymmetric.md")
    table = format_asymmetric(result)
    wall = time.perf_counter() - start
    write_json_atomic(out_dir / "asymmetric.json", {
        "settings": {**s.__dict__, "size": list(s.size)},
        "labelled_frames": record["labelled"],
        "rows": [{"row": r.key, "label": r.label, "miou": r.miou, "abs_rel": r.abs_rel, "minutes": round(r.minutes, 2),
                  "checkpoint": str(r.checkpoint), "metrics": r.metrics} for r in rows],
        "teacher": teacher_info, "gap_closed": gap, "wall_s": round(wall, 1),
    })
    write_text_atomic(result.report, "\n".join([
        "# Learning from asymmetric annotations (synthetic city)", "",
        f"{s.n_train} training frames of {h}x{w}, segmentation labels on {len(record['labelled'])} of them ({pct}), "
        f"depth on all; {s.n_val} val frames with all labels (scores: real labels only). Each small model: "
        f"{s.epochs} epochs of the demo recipe; the teacher: {_short(s.teacher_encoder)}, {s.teacher_epochs} epochs "
        f"on the labelled frames, masks kept above probability {s.threshold:g}"
        f"{f' (at least {s.class_share:g} of each class)' if s.class_share else ''}, weight {s.teacher_weight:g}.", "",
        "```", table, "```", "",
        f"Wall time {wall / 60:.1f} min in all (minutes per row: training, with the teacher's training and labelling "
        f"in (b); evaluation not counted).", "",
    ]))
    return result
