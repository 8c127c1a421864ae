"""Metrics equal hand computations, accumulate over a split, and agree with the official script."""

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from mtdense.data.labels import CLASSES, TRAIN_CLASS_NAMES, label_ids_to_train_ids, train_ids_to_label_ids
from mtdense.metrics import DepthMetrics, SegMetrics, format_metrics, metrics_to_dict


def _hand_iou(gt: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    keep = gt != 255
    g, p = gt[keep], pred[keep]
    iou = np.full(n, np.nan)
    for c in range(n):
        tp = np.sum((g == c) & (p == c))
        fp = np.sum((g != c) & (p == c))
        fn = np.sum((g == c) & (p != c))
        if tp + fp + fn:
            iou[c] = tp / (tp + fp + fn)
    return iou


def test_seg_metrics_equal_hand_computation_over_batches():
    rng = np.random.default_rng(0)
    gts, preds = [], []
    m = SegMetrics(num_classes=5)
    for _ in range(3):  # accumulated over the split, not averaged per batch
        gt = rng.integers(0, 4, (2, 6, 8))  # class 4 never in the ground truth ...
        gt[rng.random(gt.shape) < 0.2] = 255
        pred = rng.integers(0, 4, (2, 6, 8))  # ... nor predicted: NaN, left out
        m.update(torch.from_numpy(pred), torch.from_numpy(gt))
        gts.append(gt)
        preds.append(pred)
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    out = m.compute()
    iou = _hand_iou(gt, pred, 5)
    assert math.isnan(out["per_class_iou"][4].item())
    np.testing.assert_allclose(out["per_class_iou"][:4].numpy(), iou[:4], rtol=1e-12)
    assert out["miou"].item() == pytest.approx(np.nanmean(iou), rel=1e-12)
    keep = gt != 255
    assert out["pixel_acc"].item() == pytest.approx(np.mean(gt[keep] == pred[keep]), rel=1e-12)


def test_seg_metrics_small_known_case_and_logits():
    gt = torch.tensor([[[0, 0, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 2]]])  # prediction on an ignored pixel counts nowhere
    m = SegMetrics(num_classes=3)
    m.update(torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float(), gt)  # scores are arg-maxed
    out = m.compute()
    assert out["per_class_iou"][0].item() == pytest.approx(1 / 2)
    assert out["per_class_iou"][1].item() == pytest.approx(1 / 2)
    assert math.isnan(out["per_class_iou"][2].item())
    assert out["miou"].item() == pytest.approx(0.5)
    assert out["pixel_acc"].item() == pytest.approx(2 / 3)
    assert m.confmat.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_seg_metrics_rejects_label_ids():
    with pytest.raises(ValueError, match="train ids"):
        SegMetrics(num_classes=19).update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 26))


def _hand_depth(pred: np.ndarray, gt: np.ndarray) -> dict:
    ratio = np.maximum(pred / gt, gt / pred)
    return {
        "abs_rel": np.mean(np.abs(pred - gt) / gt),
        "sq_rel": np.mean((pred - gt) ** 2 / gt),
        "rmse": np.sqrt(np.mean((pred - gt) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(pred) - np.log(gt)) ** 2)),
        "delta1": np.mean(ratio < 1.25),
        "delta2": np.mean(ratio < 1.25**2),
        "delta3": np.mean(ratio < 1.25**3),
    }


def test_depth_metrics_equal_hand_computation_on_valid_pixels():
    rng = np.random.default_rng(1)
    m = DepthMetrics()
    ps, gs = [], []
    for _ in range(2):
        gt = rng.uniform(1, 80, (2, 5, 7))
        gt[rng.random(gt.shape) < 0.3] = 0.0  # invalid
        pred = gt * rng.uniform(0.6, 1.6, gt.shape) + 0.1
        m.update(torch.from_numpy(pred).float()[:, None], torch.from_numpy(gt).float())
        ps.append(pred)
        gs.append(gt)
    p, g = np.concatenate(ps), np.concatenate(gs)
    p, g = p.astype(np.float32).astype(np.float64), g.astype(np.float32).astype(np.float64)
    v = g > 1e-3
    expected = _hand_depth(p[v], g[v])
    got = m.compute()
    for k, val in expected.items():
        assert got[k].item() == pytest.approx(val, rel=1e-9), k


def test_depth_metrics_cap():
    gt = torch.tensor([[5.0, 50.0, 120.0]])
    pred = torch.tensor([[4.0, 200.0, 100.0]])
    m = DepthMetrics(max_depth=80.0)
    m.update(pred, gt)
    # 120 m ground truth is not evaluated; 200 m prediction is clamped to 80 m.
    expected = _hand_depth(np.array([4.0, 80.0]), np.array([5.0, 50.0]))
    got = m.compute()
    for k, val in expected.items():
        assert got[k].item() == pytest.approx(val, rel=1e-9), k


def test_depth_metrics_without_valid_pixels_are_nan():
    m = DepthMetrics()
    m.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    assert all(math.isnan(v.item()) for v in m.compute().values())


def test_metrics_to_dict_keys_and_table():
    seg = SegMetrics()
    seg.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    depth = DepthMetrics()
    depth.update(torch.tensor([[2.0]]), torch.tensor([[2.0]]))
    d = metrics_to_dict(seg.compute(), depth.compute(), class_names=TRAIN_CLASS_NAMES)
    assert set(d) == {"miou", "pixel_acc", "abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "per_class_iou"}
    assert list(d["per_class_iou"]) == TRAIN_CLASS_NAMES
    assert d["per_class_iou"]["road"] == 1.0 and d["per_class_iou"]["car"] is None
    assert "mIoU" in format_metrics(d) and "abs_rel" in format_metrics(d)


def test_miou_agrees_with_official_cityscapes_evaluation(tmp_path):
    """Label-id PNGs scored by cityscapesscripts' pixel-level evaluation and by SegMetrics."""
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    rng = np.random.default_rng(3)
    label_ids = np.array([c.id for c in CLASSES if c.id >= 0])  # 0..33, void ids included
    gt_files, pred_files = [], []
    ours = SegMetrics()
    for i in range(3):
        name = f"frankfurt_000000_{i:06d}"
        gt_ids = rng.choice(label_ids, size=(32, 64)).astype(np.uint8)
        gt_ids[:, :8] = 26  # car, plenty of it
        pred_train = rng.integers(0, 19, (32, 64)).astype(np.uint8)
        pred_train[pred_train == 16] = 13  # 'train' (16) never predicted ...
        gt_ids[gt_ids == 31] = 0  # ... nor in the ground truth: NaN for both
        pred_train[:, :6] = 13  # mostly right on the car block
        gt_dir = tmp_path / "gtFine" / "val" / "frankfurt"
        gt_dir.mkdir(parents=True, exist_ok=True)
        gt_file = gt_dir / f"{name}_gtFine_labelIds.png"
        pred_file = tmp_path / "results" / f"{name}_pred_labelIds.png"
        pred_file.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(gt_file), gt_ids)
        cv2.imwrite(str(pred_file), train_ids_to_label_ids(pred_train))
        gt_files.append(str(gt_file))
        pred_files.append(str(pred_file))
        ours.update(torch.from_numpy(pred_train).long()[None], torch.from_numpy(label_ids_to_train_ids(gt_ids)).long()[None])

    args = ev.args
    saved = dict(vars(args))
    try:
        args.cityscapesPath = str(tmp_path)
        args.quiet = True
        args.JSONOutput = False
        args.evalInstLevelScore = False  # needs instanceIds files; nIoU is not compared here
        args.evalPixelAccuracy = False
        args.exportFile = str(tmp_path / "official.json")
        result = ev.evaluateImgLists(pred_files, gt_files, args)
    finally:
        vars(args).clear()
        vars(args).update(saved)

    got = ours.compute()
    official = result["classScores"]
    for train_id, name in enumerate(TRAIN_CLASS_NAMES):
        mine = got["per_class_iou"][train_id].item()
        if math.isnan(official[name]):
            assert math.isnan(mine), name
        else:
            assert mine == pytest.approx(official[name], rel=1e-12), name
    assert math.isnan(official["train"])
    assert got["miou"].item() == pytest.approx(result["averageScoreClasses"], rel=1e-12)
    assert not (tmp_path / "official.json").exists()


def test_per_class_iou_is_named_by_the_given_classes():
    names = ["floor", "wall", "person", "chair", "a rather long class name"]
    seg = SegMetrics(num_classes=5)
    seg.update(torch.tensor([[[0, 1, 2, 2]]]), torch.tensor([[[0, 1, 2, 3]]]))
    d = metrics_to_dict(seg.compute(), None, class_names=names)
    assert list(d["per_class_iou"]) == names and "abs_rel" not in d
    assert d["per_class_iou"]["floor"] == 1.0 and d["per_class_iou"]["person"] == 0.5
    assert d["per_class_iou"]["chair"] == 0.0 and d["per_class_iou"]["a rather long class name"] is None
    table = format_metrics(d)
    assert "a rather long class name" in table and "road" not in table
    with pytest.raises(ValueError, match="pass class_names"):
        metrics_to_dict(seg.compute(), None)
    with pytest.raises(ValueError, match=r"19 class names .* for 5 classes"):
        metrics_to_dict(seg.compute(), None, class_names=TRAIN_CLASS_NAMES)


def test_dataset_of_other_classes_is_refused_naming_both():
    from mtdense.metrics import check_same_classes

    check_same_classes("data", ("a", "b"), ["a", "b"])
    with pytest.raises(ValueError, match=r"data: the dataset's 2 classes \(b, a\) differ from the 2 .*\(a, b\)"):
        check_same_classes("data", ["b", "a"], ["a", "b"])


def _angles(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = pred.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    t = target.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    valid = np.linalg.norm(t, axis=1) > 0
    p, t = p[valid], t[valid]
    cos = np.clip((p * t).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1), -1, 1)
    return np.degrees(np.arccos(cos))


def test_normals_metrics_equal_hand_computation_over_batches():
    from mtdense.metrics import NormalsMetrics

    g = torch.Generator().manual_seed(0)
    metric = NormalsMetrics()
    preds, targets = [], []
    for _ in range(3):
        target = torch.nn.functional.normalize(torch.randn(2, 3, 16, 24, generator=g), dim=1)
        pred = target + 0.6 * torch.randn(2, 3, 16, 24, generator=g)  # not unit length: the angle is what counts
        target[:, :, :4] = 0.0  # no label
        metric.update(pred, target)
        preds.append(pred.numpy())
        targets.append(target.numpy())
    err = np.concatenate([_angles(p, t) for p, t in zip(preds, targets)])
    assert err.size == 3 * 2 * 12 * 24
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got["normal_mean"] == pytest.approx(err.mean(), rel=1e-9)
    assert got["normal_median"] == pytest.approx(np.median(err), abs=0.01)  # within one 0.01-degree bin
    for key, limit in (("normal_11_25", 11.25), ("normal_22_5", 22.5), ("normal_30", 30.0)):
        assert got[key] == pytest.approx((err < limit).mean(), rel=1e-12)
    assert 0 < got["normal_11_25"] < got["normal_22_5"] < got["normal_30"] < 1


def test_normals_metrics_known_angles_and_no_label():
    from mtdense.metrics import NormalsMetrics

    target = torch.zeros(1, 3, 1, 4, dtype=torch.float64)
    target[0, 2] = 1.0  # +z everywhere
    target[0, :, 0, 3] = 0.0  # the last pixel has no label
    angles = torch.tensor([0.0, 10.0, 40.0, 90.0], dtype=torch.float64)
    rad = torch.deg2rad(angles)
    pred = torch.stack([torch.sin(rad), torch.zeros_like(rad), torch.cos(rad)])[None, :, None]
    metric = NormalsMetrics()
    metric.update(pred, target)
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got["normal_mean"] == pytest.approx(50 / 3, rel=1e-9)
    assert got["normal_median"] == pytest.approx(10.0, abs=0.01)
    assert (got["normal_11_25"], got["normal_22_5"], got["normal_30"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    empty = NormalsMetrics()
    empty.update(pred, torch.zeros_like(target))
    assert all(math.isnan(float(v)) for v in empty.compute().values())
    with pytest.raises(ValueError, match="must both be B x 3 x H x W"):
        metric.update(pred[:, :2], target[:, :2])
    with pytest.raises(ValueError, match="zero-length normals"):
        metric.update(torch.zeros_like(pred), target)


def test_metrics_to_dict_and_table_with_normals():
    from mtdense.metrics import NORMALS_METRIC_NAMES, NormalsMetrics

    metric = NormalsMetrics()
    target = torch.nn.functional.normalize(torch.randn(1, 3, 4, 4), dim=1)
    metric.update(target + 0.3 * torch.randn(1, 3, 4, 4), target)
    d = metrics_to_dict(None, None, normals=metric.compute())
    assert tuple(d) == NORMALS_METRIC_NAMES and all(isinstance(v, float) for v in d.values())
    table = format_metrics(d)
    assert "normals:" in table and "median deg" in table and f"{d['normal_mean']:.4f}" in table
