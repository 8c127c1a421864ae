"""The preprocessed NYUv2 (MTAN / LibMTL): exact values read back, nothing unpickled, errors named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtdense.data.nyuv2 import NYUV2_CLASSES, NYUv2Dataset, nyuv2_info, read_npy

H, W = 24, 32


def nyu_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.integers(-1, 13, (H, W)).astype(np.float32)
    n = rng.normal(size=(H, W, 3))
    normal = (n / np.linalg.norm(n, axis=2, keepdims=True)).astype(np.float32)
    normal[3, :5] = 0
    depth = rng.uniform(0.5, 10.0, (H, W, 1)).astype(np.float32)
    depth[4, :6] = 0
    return {
        "image": (rng.integers(0, 256, (H, W, 3)) / 255.0).astype(np.float32),  # k / 255: back to k exactly
        "label": label,
        "depth": depth,
        "normal": normal,
    }


def write_nyu(root: Path, counts=(("train", 3), ("val", 2))) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    written = {}
    for split, n in counts:
        for i in range(n):
            arrays = nyu_arrays(100 * (split == "val") + i)
            for folder, array in arrays.items():
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / split / folder / f"{i}.npy", array)
            written[split, i] = arrays
    return written


@pytest.fixture
def nyu(tmp_path):
    root = tmp_path / "nyuv2"
    return root, write_nyu(root)


def test_exact_values_read_back(nyu):
    root, written = nyu
    ds = NYUv2Dataset(root, "train")
    assert len(ds) == 3 and ds.classes == list(NYUV2_CLASSES) and len(ds.classes) == 13
    assert ds.classes[0] == "bed" and ds.classes[-1] == "window"
    assert ds.info == nyuv2_info() and ds.info.tasks == ("seg", "depth", "normals") and ds.info.format == "nyuv2"
    for i in range(3):
        s, a = ds[i], written["train", i]
        assert s["name"] == str(i)
        assert s["image"].dtype == np.uint8 and s["image"].shape == (H, W, 3)
        np.testing.assert_array_equal(s["image"], np.rint(a["image"].astype(np.float64) * 255).astype(np.uint8))
        assert s["seg"].dtype == np.uint8
        np.testing.assert_array_equal(s["seg"], np.where(a["label"] < 0, 255, a["label"]).astype(np.uint8))
        assert (s["seg"] == 255).any()
        assert s["depth"].dtype == np.float32 and s["depth"].shape == (H, W)
        np.testing.assert_array_equal(s["depth"], a["depth"][..., 0])
        assert s["normals"].dtype == np.float32
        np.testing.assert_allclose(s["normals"], a["normal"], atol=1e-6)
        assert not s["normals"][3, :5].any()
        assert s["paths"]["label"] == str(root / "train" / "label" / f"{i}.npy")
    assert len(NYUv2Dataset(root, "val", cache_in_memory=True)) == 2


def test_frames_sort_by_number(tmp_path):
    root = tmp_path / "nyu"
    write_nyu(root, counts=(("train", 12),))
    assert [f.name for f in NYUv2Dataset(root, "train").frames] == [str(i) for i in range(12)]


def _mark(path: str) -> None:
    Path(path).write_text("unpickled")


class _Payload:
    """Unpickling this object writes a file: the test proves it never happens."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_mark, (self.path,))


def test_object_arrays_are_refused_never_unpickled(nyu, tmp_path):
    root, _ = nyu
    flag = tmp_path / "flag"
    path = root / "train" / "label" / "1.npy"
    np.save(path, np.array([_Payload(str(flag))], dtype=object), allow_pickle=True)
    ds = NYUv2Dataset(root, "train")
    with pytest.raises(ValueError, match=r"holds Python objects \(an object array\), which are not unpickled") as info:
        ds[1]
    assert str(path) in str(info.value) and not flag.exists()


def test_missing_array_and_split(nyu):
    root, _ = nyu
    (root / "train" / "normal" / "2.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"normal/2\.npy: missing \(1 arrays missing"):
        NYUv2Dataset(root, "train")
    with pytest.raises(FileNotFoundError, match=r"test/image does not exist; splits under .*: train, val"):
        NYUv2Dataset(root, "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NYUv2Dataset(root / "nowhere", "train")


@pytest.mark.parametrize("folder, array, message", [
    ("label", np.full((H, W), 13, np.float32), r"label values \[13\.0\] are not class indices 0\.\.12 nor -1"),
    ("label", np.full((H, W), 0.5, np.float32), r"label values \[0\.5\]"),
    ("image", np.full((H, W, 3), 200.0, np.float32), r"image values span 200\.\.200, expected floats in \[0, 1\]"),
    ("image", np.zeros((3, H, W), np.float32), r"shape \(3, 24, 32\), expected H x W x 3"),
    ("depth", np.full((H, W, 1), -1.0, np.float32), r"768 negative depths"),
    ("depth", np.full((H, W, 1), np.nan, np.float32), r"768 values of the depth are NaN or infinite"),
    ("normal", np.full((H, W, 3), 2.0, np.float32), r"normal components span 2\.\.2, expected \[-1, 1\]"),
    ("depth", np.ones((20, W, 1), np.float32), r"20x32 \(H x W\) but its image .*0\.npy is 24x32"),
    ("label", np.array(["a"] * 4), r"a <U1 array; the label must be numeric"),
])
def test_bad_arrays_name_the_file(nyu, folder, array, message):
    root, _ = nyu
    path = root / "train" / folder / "0.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message) as info:
        NYUv2Dataset(root, "train")[0]
    assert str(info.value).startswith(str(path))


def test_truncated_or_foreign_files(nyu):
    root, _ = nyu
    path = root / "train" / "depth" / "0.npy"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"not a readable \.npy array") as info:
        NYUv2Dataset(root, "train")[0]
    assert str(path) in str(info.value)
    path.write_bytes(b"PK\x03\x04 an npz or anything else")
    with pytest.raises(ValueError, match=r"0\.npy: not a readable \.npy array \(no \.npy header\)"):
        read_npy(path, "depth")


def test_the_nyuv2_recipe_trains_three_tasks_through_the_cli(nyu, tmp_path):
    """The packaged recipe, shrunk to two steps: a seg + depth + normals model whose checkpoint
    names the 13 classes, whose validation logs the normals figures, and that evaluate scores."""
    import json

    from mtdense import load_model
    from mtdense.cli import main
    from mtdense.data.description import model_dataset_info

    root, _ = nyu
    run = tmp_path / "run"
    assert main(["train", "nyuv2_mobilenet_v3_small", "--out", str(run), "--set", f"data.root={root}",
                 "data.num_workers=0", "data.cache_in_memory=false", "data.val_size=[32, 32]", "model.pretrained=false",
                 "model.decoder_channels=16", "stages.0.size=[32, 32]", "stages.0.epochs=1", "stages.0.batch_size=2",
                 "trainer.accelerator=cpu", "trainer.devices=1", "trainer.limit_train_batches=1",
                 "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1", "trainer.progress_bar=false"]) == 0
    model = load_model(run / "model.pth")
    assert model.tasks == {"seg": 13, "depth": 1, "normals": 3}
    info = model_dataset_info(model)
    assert info.format == "nyuv2" and info.classes == NYUV2_CLASSES and info.tasks == ("seg", "depth", "normals")
    header = next((run / "stage0-full" / "csv").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "val/normal_mean" in header and "train/loss_normals" in header
    out = tmp_path / "eval"
    assert main(["evaluate", str(run / "model.pth"), "--data", str(root), "--size", "32", "32", "--out", str(out),
                 "--workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluation"]["format"] == "nyuv2" and list(metrics["per_class_iou"]) == list(NYUV2_CLASSES)
    assert 0 <= metrics["normal_mean"] <= 180 and 0 <= metrics["normal_30"] <= 1
