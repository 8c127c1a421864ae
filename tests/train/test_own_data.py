"""Your own data end to end: a 5-class folder dataset trained, evaluated and predicted through the CLI,
with the dataset's class names in the metrics and plots and its colours in the panels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mtdense.cli import main


@pytest.fixture(scope="module")
def trained(tiny_folder, tmp_path_factory) -> Path:
    """``model.pth`` of a few training steps of the demo recipe on the 5-class folder dataset."""
    run = tmp_path_factory.mktemp("own_data") / "run"
    rc = main([
        "train", "synthetic_demo", "--out", str(run), "--set",
        "data.format=folder", f"data.root={tiny_folder}", "data.generate=null", "data.cache_in_memory=false",
        "model.decoder_channels=16", "stages.0.size=[64, 96]", "stages.0.epochs=1", "stages.0.batch_size=2",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=1", "trainer.progress_bar=false",
    ])
    assert rc == 0
    assert (run / "model.pth").is_file()
    return run / "model.pth"


def test_evaluate_and_predict_name_and_colour_the_dataset_classes(trained, tiny_folder, tmp_path):
    description = yaml.safe_load((tiny_folder / "dataset.yaml").read_text())
    classes, colors = description["classes"], np.array(description["colors"], np.uint8)
    assert len(classes) == 5

    out = tmp_path / "eval"
    assert main(["evaluate", str(trained), "--data", str(tiny_folder), "--out", str(out), "--workers", "0",
                 "--save-predictions"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["per_class_iou"]) == classes
    assert metrics["num_images"] == 2 and metrics["abs_rel"] is not None
    assert not (out / "predictions" / "labelIds").exists()  # not Cityscapes: class indices instead
    for png in sorted((out / "predictions" / "trainIds").glob("*_pred_trainIds.png")):
        assert cv2.imread(str(png), cv2.IMREAD_UNCHANGED).max() < 5

    report = tmp_path / "analysis"
    assert main(["analyze", str(trained), "--data", str(tiny_folder), "--out", str(report)]) == 0
    analysis = json.loads((report / "metrics.json").read_text())
    assert list(analysis["segmentation"]["per_class_iou"]) == classes and analysis["classes"] == classes
    assert np.array(analysis["confusion_matrix"]).shape == (5, 5)

    image_file = tiny_folder / "images" / "val" / "frame000.png"
    pred_dir = tmp_path / "pred"
    assert main(["predict", str(trained), str(image_file), "--out", str(pred_dir)]) == 0
    assert not (pred_dir / "frame000_labelIds.png").exists()
    seg = cv2.imread(str(pred_dir / "frame000_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert seg.max() < 5
    rgb = cv2.cvtColor(cv2.imread(str(image_file)), cv2.COLOR_BGR2RGB)
    h, w = seg.shape
    panel = cv2.cvtColor(cv2.imread(str(pred_dir / "frame000_panel.png")), cv2.COLOR_BGR2RGB)
    overlay = panel[:, w : 2 * w]
    # every pixel is the image blended half and half with its class's colour from dataset.yaml
    np.testing.assert_array_equal(overlay, cv2.addWeighted(rgb, 0.5, colors[seg], 0.5, 0.0))
    assert (overlay != rgb).any()


def test_evaluate_refuses_a_dataset_of_other_classes(trained, tiny_folder, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    (other / "dataset.yaml").write_text("classes: [sky, road, tree, car, house]\n")
    assert main(["evaluate", str(trained), "--data", str(other), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "sky, road, tree, car, house" in err and "floor, wall, person, chair, table" in err


def test_pseudo_labels_follow_the_model_classes(trained, tiny_folder, tiny_cityscapes):
    from mtdense.data.image import read_image
    from mtdense.teachers.model import PseudoLabeler, pseudo_label_split

    labeler = PseudoLabeler(trained, threshold=0.0)
    assert labeler.info.classes == ("floor", "wall", "person", "chair", "table")
    labels = labeler(read_image(tiny_folder / "images" / "val" / "frame000.png"))
    assert labels.max() < 5
    with pytest.raises(ValueError, match=r"5 classes \(floor, wall.*\) are not the 19 Cityscapes classes"):
        pseudo_label_split(tiny_cityscapes, labeler, split="train", out="gtPseudo", progress=False)
