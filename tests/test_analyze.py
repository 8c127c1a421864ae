"""``analyze``: split-level figures equal hand computations; the report is written."""

import json

import numpy as np
import pytest
import torch

import mtdense
from mtdense.analyze import analyze, write_report
from mtdense.inference import Predictor


class FixedPredictor(Predictor):
    """A Predictor whose outputs are given (so every figure can be computed by hand)."""

    def __init__(self, outputs, info=None):
        from mtdense.data.description import DatasetInfo

        self.outputs = iter(outputs)
        self.device = torch.device("cpu")
        self.info = info or DatasetInfo.cityscapes()

    def predict(self, image):
        return next(self.outputs)


def sample(seg, depth):
    h, w = seg.shape
    return {"image": np.zeros((h, w, 3), np.uint8), "seg": seg.astype(np.uint8), "depth": depth.astype(np.float32)}


def test_figures_equal_hand_computation(tmp_path):
    from mtdense.inference import Prediction

    gt_seg = np.array([[0, 0, 1, 255]])
    gt_depth = np.array([[1.0, 3.0, 12.0, 0.0]])  # last pixel invalid
    pred = Prediction(np.array([[0, 1, 1, 5]], np.uint8), np.array([[1.5, 3.0, 6.0, 9.0]], np.float32))
    result = analyze(FixedPredictor([pred, pred]), [sample(gt_seg, gt_depth)] * 2, progress=False)
    assert result.samples == 2
    # confusion: rows gt, cols pred, ignore dropped
    assert result.confusion[0, 0] == 2 and result.confusion[0, 1] == 2 and result.confusion[1, 1] == 2
    assert result.confusion.sum() == 6
    assert result.seg["per_class_iou"][0] == pytest.approx(2 / 4)  # TP 2, FN 2
    assert result.seg["per_class_iou"][1] == pytest.approx(2 / 4)  # TP 2, FP 2
    assert result.seg["pixel_acc"] == pytest.approx(4 / 6)
    abs_rel = np.mean([0.5, 0.0, 0.5])
    assert result.depth["abs_rel"] == pytest.approx(abs_rel)
    # error against distance: 1 m and 3 m fall in (0, 2] and (2, 4], 12 m in (10, 15]
    by_bin = dict(zip(result.distance_edges[1:], zip(result.distance_abs_rel, result.distance_pixels)))
    assert by_bin[2.0] == (pytest.approx(0.5), 2)
    assert by_bin[4.0] == (pytest.approx(0.0), 2)
    assert by_bin[15.0] == (pytest.approx(0.5), 2)
    assert result.distance_pixels.sum() == 6
    # histograms: the same (valid) pixels for both
    assert result.hist_gt.sum() == result.hist_pred.sum() == 6
    assert len(result.hist_edges) == 1001
    paths = write_report(result, tmp_path)
    assert {p.name for p in paths} == {"depth_histogram.png", "class_iou.png", "confusion_matrix.png", "error_vs_distance.png", "metrics.json"}
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["depth"]["abs_rel"] == pytest.approx(abs_rel)
    assert data["segmentation"]["per_class_iou"]["sky"] is None  # absent class: NaN -> null
    assert "mIoU" in result.summary()


def test_hist_samples_and_max_samples():
    seg = np.zeros((4, 4))
    depth = np.full((4, 4), 5.0)
    model = mtdense.create_model(decoder_channels=16).eval()
    result = analyze(Predictor(model, size=(64, 64)), [sample(seg, depth)] * 3, max_samples=2, hist_samples=1, progress=False)
    assert result.samples == 2 and result.hist_samples == 1
    assert result.hist_gt.sum() == 16
    assert result.confusion.sum() == 32
    with pytest.raises(ValueError, match="empty"):
        analyze(Predictor(model), [], progress=False)


def test_classes_and_missing_labels_follow_the_model(tmp_path):
    from mtdense.data.description import DatasetInfo
    from mtdense.inference import Prediction

    info = DatasetInfo(classes=("floor", "wall", "person"))
    seg = np.array([[0, 1, 2, 2]], np.uint8)
    pred = Prediction(seg, np.full((1, 4), 2.0, np.float32), info=info)
    no_depth = {"image": np.zeros((1, 4, 3), np.uint8), "seg": seg}
    no_seg = {"image": np.zeros((1, 4, 3), np.uint8), "depth": np.full((1, 4), 4.0, np.float32)}
    result = analyze(FixedPredictor([pred, pred], info), [no_depth, no_seg], progress=False)
    assert result.confusion.shape == (3, 3) and result.confusion.sum() == 4  # only the sample with a mask
    assert result.depth["abs_rel"] == pytest.approx(0.5)  # only the sample with depth
    assert result.hist_gt.sum() == 4
    write_report(result, tmp_path)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert list(data["segmentation"]["per_class_iou"]) == ["floor", "wall", "person"]
    assert data["classes"] == ["floor", "wall", "person"]
