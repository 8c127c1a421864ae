"""``mtdense data pseudo-label``: a (random-init) model labels unannotated images where it is
confident; real annotations are never replaced."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mtdense import create_model, load_model
from mtdense.cli import main
from mtdense.data.cityscapes import CityscapesDataset, read_label_ids
from mtdense.data.labels import IGNORE_INDEX, label_ids_to_train_ids
from mtdense.teachers.model import PseudoLabeler, manifest_path, pseudo_label_split
from mtdense.data.image import normalize_images
from mtdense.inference import Predictor
from mtdense.models.factory import save_checkpoint

CITY = "lindau"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model(decoder_channels=16, pretrained=False)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.pth")


def write_images(root: Path, split: str, n: int, size=(64, 128), seed: int = 0) -> list[Path]:
    """``n`` left images of smooth random colour blobs (no labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "leftImg8bit" / split / CITY
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
        image = cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC)
        paths.append(folder / f"{CITY}_{i:06d}_000019_leftImg8bit.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def confidence(checkpoint: Path, image_path: Path) -> np.ndarray:
    """Softmax probability of the winning class, computed here from the model directly."""
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        logits = load_model(checkpoint)(normalize_images([rgb]))["seg"]
    return logits.softmax(1).amax(1)[0].numpy()


def label_file(root: Path, folder: str, split: str, image: Path) -> Path:
    return root / folder / split / CITY / image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")


def test_cli_keeps_the_confident_pixels_of_the_models_argmax(tmp_path, checkpoint, capsys):
    root = tmp_path / "city"
    images = write_images(root, "train_extra", 3)
    threshold = float(np.median(confidence(checkpoint, images[0])))  # about half the pixels pass
    argv = ["data", "pseudo-label", str(checkpoint), str(root), "--split", "train_extra", "--threshold", f"{threshold:.6f}"]
    assert main(argv) == 0
    assert "3 labelled" in capsys.readouterr().out
    predictor = Predictor(checkpoint)
    kept_total = 0
    for image in images:
        ids = read_label_ids(label_file(root, "gtFine", "train_extra", image))
        assert ids.shape == (64, 128)
        train = label_ids_to_train_ids(ids)  # raises on an id outside the official table
        conf = confidence(checkpoint, image)
        low, high = conf < threshold - 1e-5, conf > threshold + 1e-5
        assert np.all(ids[low] == 0) and np.all(train[low] == IGNORE_INDEX)
        np.testing.assert_array_equal(ids[high], predictor.predict(str(image)).label_ids()[high])
        kept_total += int(high.sum())
        if image == images[0]:  # the threshold is this image's median confidence
            assert 0 < high.sum() < high.size and low.any()
    assert kept_total > 0

    record = json.loads(manifest_path(root, "gtFine", "train_extra").read_text())
    assert len(record["labelled"]) == 3 and record["threshold"] == pytest.approx(threshold, abs=1e-6)
    assert record["checkpoint"] == str(checkpoint.resolve()) and 0 < record["summary"]["kept_share"] < 1

    # Resumable: the second run keeps what the first wrote.
    stamps = [label_file(root, "gtFine", "train_extra", p).stat().st_mtime_ns for p in images]
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "0 labelled" in again and "3 kept from an earlier run" in again
    assert [label_file(root, "gtFine", "train_extra", p).stat().st_mtime_ns for p in images] == stamps
    assert json.loads(manifest_path(root, "gtFine", "train_extra").read_text()) == record  # nothing new to record

    # Training reads them like real labels; the unconfident pixels are ignored.
    sample = CityscapesDataset(root, "train_extra", depth_source=None)[0]
    conf = confidence(checkpoint, images[0])
    assert np.all(sample["seg"][conf < threshold - 1e-5] == IGNORE_INDEX)


def test_resized_input_gives_labels_at_the_image_size(tmp_path, checkpoint):
    root = tmp_path / "city"
    write_images(root, "train_extra", 1, size=(48, 96))
    summary = pseudo_label_split(root, PseudoLabeler(checkpoint, threshold=0.0, size=(32, 64)), split="train_extra",
                                 out="gtPseudo", progress=False)
    assert summary.labelled == 1 and summary.kept_share == 1.0  # threshold 0 keeps every pixel
    assert sum(summary.class_pixels.values()) == 48 * 96
    ids = read_label_ids(next((root / "gtPseudo" / "train_extra").rglob("*_gtFine_labelIds.png")))
    assert ids.shape == (48, 96) and np.all(label_ids_to_train_ids(ids) < IGNORE_INDEX)


def test_real_annotations_are_never_replaced(tmp_path, checkpoint, capsys):
    root = tmp_path / "city"
    annotated, bare = write_images(root, "train", 2)
    real = label_file(root, "gtFine", "train", annotated)
    real.parent.mkdir(parents=True)
    cv2.imwrite(str(real), np.full((64, 128), 7, np.uint8))  # road everywhere
    real_bytes = real.read_bytes()
    pseudo = label_file(root, "gtFine", "train", bare)
    base = ["data", "pseudo-label", str(checkpoint), str(root), "--split", "train", "--threshold", "0"]

    assert main(base) == 0
    out = capsys.readouterr().out
    assert "1 labelled, 1 skipped (real annotation)" in out
    assert real.read_bytes() == real_bytes and pseudo.is_file()

    # --overwrite relabels the earlier pseudo-label but still keeps the real annotation.
    stamp = pseudo.stat().st_mtime_ns
    assert main([*base, "--overwrite"]) == 0
    assert "1 labelled, 1 skipped (real annotation)" in capsys.readouterr().out
    assert real.read_bytes() == real_bytes and pseudo.stat().st_mtime_ns >= stamp

    # Into a separate folder, --overwrite labels the annotated image too; gtFine stays as it was.
    assert main([*base, "--overwrite", "--out", "gtPseudo"]) == 0
    assert "2 labelled, 0 skipped" in capsys.readouterr().out
    assert label_file(root, "gtPseudo", "train", annotated).is_file() and real.read_bytes() == real_bytes
    # Without --overwrite the annotated image is left out of the separate folder as well.
    assert main([*base, "--out", "gtOther"]) == 0
    assert not label_file(root, "gtOther", "train", annotated).exists() and label_file(root, "gtOther", "train", bare).is_file()


def test_bad_inputs_name_the_problem(tmp_path, checkpoint, capsys):
    with pytest.raises(ValueError, match="0..1"):
        PseudoLabeler(checkpoint, threshold=1.5)
    assert main(["data", "pseudo-label", str(tmp_path / "none.pth"), str(tmp_path)]) == 2
    assert "none.pth" in capsys.readouterr().err
    root = tmp_path / "city"
    write_images(root, "train_extra", 1)
    record = manifest_path(root, "gtFine", "train_extra")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("{not json")
    with pytest.raises(ValueError, match="train_extra_pseudo_labels.json"):
        pseudo_label_split(root, PseudoLabeler(checkpoint), split="train_extra", progress=False)
    with pytest.raises(ValueError, match="folder name"):
        pseudo_label_split(root, PseudoLabeler(checkpoint), split="train_extra", out="../elsewhere", progress=False)
