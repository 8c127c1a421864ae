"""A tiny Cityscapes-layout tree (64 x 128 frames) written with the official file formats."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtdense.data.labels import LABEL_ID_COLORS

CITY = "aachen"
BASELINE, FX = 0.209313, 2262.52 / 16  # a 1/16-scale Cityscapes camera


def write_frame(root: Path, split: str, index: int, size: tuple[int, int], rng: np.random.Generator) -> None:
    h, w = size
    stem = f"{CITY}_{index:06d}_000019"
    rows = np.arange(h)[:, None].repeat(w, 1)
    horizon = int(h * rng.uniform(0.35, 0.5))
    ids = np.full((h, w), 11, np.uint8)  # building
    ids[: horizon // 2] = 23  # sky
    ids[horizon:] = 7  # road
    x0 = int(rng.integers(0, w - 40))
    ids[horizon - 6 : horizon + 10, x0 : x0 + 30] = 26  # car
    ids[-4:] = 1  # ego vehicle: ignored
    image = LABEL_ID_COLORS[ids].astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    # Ground plane: disparity grows below the horizon; far things get a small disparity.
    disp = np.where(rows > horizon, (rows - horizon + 1) * 0.8, 0.6)
    disp[ids == 26] = 3.0
    png = np.round(disp * 256 + 1).astype(np.uint16)
    png[ids == 23] = 0  # no disparity in the sky
    png[:, :3] = 0  # nor at the left border
    for folder, suffix, data in [
        ("leftImg8bit", "leftImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
        ("rightImg8bit", "rightImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
        ("gtFine", "gtFine_labelIds.png", ids),
        ("disparity", "disparity.png", png),
    ]:
        d = root / folder / split / CITY
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{stem}_{suffix}"), data)
    cam = root / "camera" / split / CITY
    cam.mkdir(parents=True, exist_ok=True)
    (cam / f"{stem}_camera.json").write_text(json.dumps({
        "extrinsic": {"baseline": BASELINE, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.02, "z": 1.3},
        "intrinsic": {"fx": FX, "fy": FX, "u0": w / 2, "v0": h / 2},
    }))


def make_cityscapes(root: Path, n_train: int = 8, n_val: int = 4, size: tuple[int, int] = (64, 128), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            write_frame(root, split, i, size, rng)
    return root


@pytest.fixture(scope="session")
def tiny_cityscapes(tmp_path_factory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


def _tiny_recipe(root: Path, **stage) -> dict:
    """A recipe dict for a tiny random-init model on ``root`` (one short stage)."""
    return {
        "name": "tiny",
        "data": {"root": str(root), "num_workers": 0},
        "model": {"encoder": "mobilenet_v3_small", "decoder_channels": 16, "pretrained": False},
        "stages": [{"name": "s0", "size": [64, 128], "epochs": 1, "batch_size": 2, "lr": 2e-3, **stage}],
        "trainer": {"accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "log_every_n_steps": 1, "progress_bar": False},
    }


@pytest.fixture(scope="session")
def tiny_recipe():
    """Factory: ``tiny_recipe(root, **stage_keys)`` -> a fresh recipe dict."""
    return _tiny_recipe


FOLDER_CLASSES = ["floor", "wall", "person", "chair", "table"]
FOLDER_COLORS = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [40, 220, 220]]


def make_folder_dataset(root: Path, size: tuple[int, int] = (64, 96), n_train: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    """A 5-class ``folder`` dataset with its own colours: masks and 16-bit depth for every frame
    but the first training one, which has neither (a frame without labels)."""
    rng = np.random.default_rng(seed)
    h, w = size
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(f"classes: {FOLDER_CLASSES}\ncolors: {FOLDER_COLORS}\n")
    colors = np.array(FOLDER_COLORS, np.int16)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            mask = np.zeros((h, w), np.uint8)
            for k in range(1, 5):  # a band per class, at a random height
                top = int(rng.integers(0, h - 8))
                mask[top : top + 8, (k - 1) * w // 4 : k * w // 4] = k
            image = np.clip(colors[mask] + rng.integers(-15, 16, (h, w, 3)), 0, 255).astype(np.uint8)
            depth = np.round((2.0 + mask.astype(np.float32)) * 256).astype(np.uint16)
            files = {"images": cv2.cvtColor(image, cv2.COLOR_RGB2BGR)}
            if not (split == "train" and i == 0):
                files.update({"masks": mask, "depth": depth})
            for folder, data in files.items():
                d = root / folder / split
                d.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(d / f"frame{i:03d}.png"), data)
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("folder") / "data")
