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
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.io import atomic_path, write_json_atomic, write_text_atomic

__all__ = ["DemoResult", "run_demo", "save_prediction_figure", "task_overrides", "DEMO_CONFIG", "DEMO_TASKS"]

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
