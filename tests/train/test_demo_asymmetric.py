"""``mtdense demo --asymmetric``: the synthetic city as a folder dataset with segmentation labels on a
share of the frames, and the three rows (labelled frames alone, + a teacher's labels, all labels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mtdense.cli import main
from mtdense.data.cityscapes import CityscapesDataset
from mtdense.data.description import DatasetInfo
from mtdense.data.folder import FolderDataset
from mtdense.data.synthetic import generate_city
from mtdense.demo import AsymmetricSettings, asymmetric_folder


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return generate_city(tmp_path_factory.mktemp("asym") / "city", 10, 2, size=(64, 128), seed=3, progress=False,
                         workers=0).root


def test_the_city_as_a_folder_dataset_with_a_share_of_the_masks(city, tmp_path):
    root = tmp_path / "data"
    record = asymmetric_folder(city, root, share=0.3, seed=5, progress=False)
    assert record["frames"] == {"train": 10, "train_labelled": 3, "train_full": 10, "val": 2}
    labelled = record["labelled"]
    assert len(labelled) == 3 == len(set(labelled))
    truth = {s["name"]: s for s in CityscapesDataset(city, "train")}
    train = FolderDataset(root, "train")
    assert train.classes == list(DatasetInfo.cityscapes().classes)
    assert sorted(f.name for f in train.frames) == sorted(truth)
    for sample in train:
        t = truth[sample["name"]]
        np.testing.assert_array_equal(sample["image"], t["image"])
        np.testing.assert_allclose(sample["depth"], np.round(t["depth"] * 256) / 256, atol=1e-6)
        if sample["name"] in labelled:
            np.testing.assert_array_equal(sample["seg"], t["seg"])
        else:
            assert (sample["seg"] == 255).all()
    assert sorted(f.name for f in FolderDataset(root, "train_labelled").frames) == sorted(labelled)
    assert all(f.mask is not None for f in FolderDataset(root, "train_full").frames)
    assert len(FolderDataset(root, "val")) == 2
    description = yaml.safe_load((root / "dataset.yaml").read_text())
    assert len(description["classes"]) == 19 and description["ignore_index"] == 255
    # the same settings: kept; other settings: refused, naming the fix
    assert asymmetric_folder(city, root, share=0.3, seed=5, progress=False) == record
    with pytest.raises(ValueError, match=r"holds the data of another experiment.*give another --out"):
        asymmetric_folder(city, root, share=0.5, seed=5, progress=False)


def test_settings_and_options_are_checked(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--share 1\.5"):
        AsymmetricSettings(share=1.5).check()
    with pytest.raises(ValueError, match=r"--share 0\.01 of 20 frames labels none"):
        AsymmetricSettings(n_train=20, share=0.01).check()
    assert main(["demo", "--out", str(tmp_path / "x"), "--epochs", "3"]) == 2
    assert "--epochs sizes the --asymmetric experiment; add --asymmetric" in capsys.readouterr().err
    assert main(["demo", "--asymmetric", "--tasks", "seg", "--out", str(tmp_path / "x")]) == 2
    assert "--tasks and --asymmetric do not go together" in capsys.readouterr().err
    (tmp_path / "old" / "train").mkdir(parents=True)
    assert main(["demo", "--asymmetric", "--out", str(tmp_path / "old")]) == 2
    assert "holds the runs of an earlier experiment" in capsys.readouterr().err


def test_demo_asymmetric_prints_the_three_rows(tmp_path, capsys):
    out = tmp_path / "asym"
    # the city the command would generate, made here in this process: the generator's worker processes are
    # forked, and a fork after OpenCV started its thread pool in this process (earlier tests) can hang
    generate_city(out / "city", 10, 3, size=(64, 128), seed=AsymmetricSettings().seed, progress=False, workers=0)
    assert main(["demo", "--asymmetric", "--out", str(out), "--frames", "10", "--val-frames", "3", "--size", "64", "128",
                 "--epochs", "1", "--teacher-epochs", "1", "--threshold", "0.5", "--teacher-weight", "0.5", "--set",
                 "model.decoder_channels=16", "stages.0.batch_size=2", "trainer.limit_train_batches=2",
                 "trainer.progress_bar=false"]) == 0
    printed = capsys.readouterr().out
    lines = {line[:3]: line for line in printed.splitlines() if line[:3] in ("(a)", "(b)", "(c)")}
    assert set(lines) == {"(a)", "(b)", "(c)"}
    assert "seg labels on 20% of frames" in lines["(a)"] and "MobileNetV3-Large teacher" in lines["(b)"]
    assert "gap: (b) closes" in printed or "gap: none to close" in printed
    result = json.loads((out / "asymmetric.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == ["a", "b", "c"]
    for r in rows.values():
        assert 0 <= r["miou"] <= 1 and r["abs_rel"] > 0 and r["minutes"] > 0
        assert f"{100 * r['miou']:.1f}%" in lines[f"({r['row']})"] and f"{r['abs_rel']:.3f}" in lines[f"({r['row']})"]
        assert r["metrics"]["evaluation"]["label_sources"] == {"seg": "masks", "depth": "depth"}
        assert r["metrics"]["num_images"] == 3
    assert result["settings"]["share"] == 0.2 and len(result["labelled_frames"]) == 2
    data = out / "data"
    assert len(list((data / "masks" / "train").glob("*.png"))) == 2
    assert len(list((data / "masks_teacher" / "train").glob("*.png"))) == 10
    runs = out / "train"
    student = yaml.safe_load((runs / "b_real_and_teacher" / "config.yaml").read_text().split("\n", 1)[1])
    assert student["data"]["sources"] == {"seg": ["masks", "masks_teacher"]}
    assert student["data"]["teacher_weight"] == {"seg": 0.5} and student["data"]["train_split"] == "train"
    teacher = yaml.safe_load((runs / "teacher" / "config.yaml").read_text().split("\n", 1)[1])
    assert teacher["model"]["encoder"] == "mobilenet_v3_large" and teacher["data"]["train_split"] == "train_labelled"
    ceiling = yaml.safe_load((runs / "c_all_labels" / "config.yaml").read_text().split("\n", 1)[1])
    assert ceiling["data"]["train_split"] == "train_full" and ceiling["data"]["sources"] is None
    assert "(b)" in (out / "asymmetric.md").read_text()
