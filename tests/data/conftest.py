"""A hand-made Cityscapes tree: every label id, disparity value and calibration is chosen here,
next to the train ids and depths (worked out by hand) that a correct loader returns for them.

Depth [m] = baseline * fx / d with d = (p - 1) / 256 px; p = 0 and p = 1 (d = 0) are invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtdense.data.labels import LABEL_ID_COLORS

# Each frame: 4 x 6 pixels. Label ids -> train ids by the official table:
# 7 road 0, 8 sidewalk 1, 11 building 2, 12 wall 3, 13 fence 4, 17 pole 5, 19 traffic light 6,
# 20 traffic sign 7, 21 vegetation 8, 22 terrain 9, 23 sky 10, 24 person 11, 25 rider 12, 26 car 13,
# 27 truck 14, 28 bus 15, 31 train 16, 32 motorcycle 17, 33 bicycle 18;
# 0 unlabeled, 1 ego vehicle, 3 out of roi, 6 ground, 9 parking, 10 rail track -> 255 (ignore).
HAND_FRAMES = {
    "aachen_000000_000019": {
        "city": "aachen",
        "camera": {"baseline": 0.2, "fx": 10.0, "fy": 10.1, "u0": 3.0, "v0": 2.0},  # b * fx = 2 m px
        "ids": [[23, 23, 23, 23, 23, 23],
                [11, 11, 17, 20, 21, 21],
                [7, 7, 26, 26, 24, 33],
                [1, 1, 0, 8, 8, 3]],
        "train": [[10, 10, 10, 10, 10, 10],
                  [2, 2, 5, 7, 8, 8],
                  [0, 0, 13, 13, 11, 18],
                  [255, 255, 255, 1, 1, 255]],
        # d = 1/16, 1/8, 1/4 px and p = 1 (d = 0, invalid); 1/2, 1, 1/8 px; 2 px
        "disparity": [[0, 0, 0, 0, 0, 0],
                      [17, 17, 33, 33, 65, 1],
                      [129, 129, 257, 257, 0, 33],
                      [513, 513, 513, 0, 0, 0]],
        "depth": [[0, 0, 0, 0, 0, 0],
                  [32, 32, 16, 16, 8, 0],
                  [4, 4, 2, 2, 0, 16],
                  [1, 1, 1, 0, 0, 0]],
    },
    "aachen_000001_000019": {
        "city": "aachen",
        "camera": {"baseline": 0.5, "fx": 12.0, "fy": 12.0, "u0": 2.5, "v0": 1.5},  # b * fx = 6 m px
        "ids": [[23, 23, 23, 23, 23, 23],
                [21, 21, 21, 11, 11, 11],
                [7, 7, 7, 7, 7, 7],
                [7, 7, 6, 6, 9, 10]],
        "train": [[10, 10, 10, 10, 10, 10],
                  [8, 8, 8, 2, 2, 2],
                  [0, 0, 0, 0, 0, 0],
                  [0, 0, 255, 255, 255, 255]],
        # d = 1/16, 1/8, 1/4, 1/2, 1 px
        "disparity": [[0, 0, 0, 0, 0, 0],
                      [17, 17, 17, 33, 33, 33],
                      [65, 65, 65, 65, 65, 65],
                      [129, 129, 257, 257, 0, 0]],
        "depth": [[0, 0, 0, 0, 0, 0],
                  [96, 96, 96, 48, 48, 48],
                  [24, 24, 24, 24, 24, 24],
                  [12, 12, 6, 6, 0, 0]],
    },
    "bochum_000000_000019": {
        "city": "bochum",
        "camera": {"baseline": 0.25, "fx": 8.0, "fy": 8.0, "u0": 3.0, "v0": 2.0},  # b * fx = 2 m px
        "ids": [[23, 23, 19, 19, 23, 23],
                [11, 12, 13, 13, 25, 25],
                [7, 27, 28, 31, 32, 32],
                [22, 22, 8, 8, 8, 8]],
        "train": [[10, 10, 6, 6, 10, 10],
                  [2, 3, 4, 4, 12, 12],
                  [0, 14, 15, 16, 17, 17],
                  [9, 9, 1, 1, 1, 1]],
        # d = 1/32, 1/8, 1/4, 1/2, 1, 2 px
        "disparity": [[0, 0, 9, 9, 0, 0],
                      [33, 33, 65, 65, 129, 129],
                      [257, 257, 257, 257, 257, 257],
                      [513, 513, 513, 513, 513, 513]],
        "depth": [[0, 0, 64, 64, 0, 0],
                  [16, 16, 8, 8, 4, 4],
                  [2, 2, 2, 2, 2, 2],
                  [1, 1, 1, 1, 1, 1]],
    },
}
VAL_FRAME = ("frankfurt_000000_000019", "aachen_000000_000019")  # val frame: a copy of this train frame's data


def camera_json(baseline: float, fx: float, fy: float, u0: float, v0: float) -> dict:
    """A camera file in the Cityscapes format."""
    return {
        "extrinsic": {"baseline": baseline, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1, "yaw": -0.02, "z": 1.3},
        "intrinsic": {"fx": fx, "fy": fy, "u0": u0, "v0": v0},
    }


def write_frame(
    root: Path, split: str, city: str, name: str, image: np.ndarray, ids: np.ndarray | None = None,
    disparity: np.ndarray | None = None, camera: dict | None = None, right: np.ndarray | None = None,
    depth_folder: str = "disparity",
) -> dict[str, Path]:
    """Write one frame's files (image RGB uint8, ids uint8, disparity uint16 PNG values)."""
    paths = {}

    def put(role: str, folder: str, suffix: str, data) -> None:
        d = root / folder / split / city
        d.mkdir(parents=True, exist_ok=True)
        paths[role] = d / f"{name}_{suffix}"
        if suffix.endswith(".json"):
            paths[role].write_text(json.dumps(data))
        else:
            assert cv2.imwrite(str(paths[role]), data)

    put("image", "leftImg8bit", "leftImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if ids is not None:
        put("label", "gtFine", "gtFine_labelIds.png", np.asarray(ids, np.uint8))
    if disparity is not None:
        put("disparity", depth_folder, "disparity.png", np.asarray(disparity, np.uint16))
    if camera is not None:
        put("camera", "camera", "camera.json", camera_json(**camera))
    if right is not None:
        put("right", "rightImg8bit", "rightImg8bit.png", cv2.cvtColor(right, cv2.COLOR_RGB2BGR))
    return paths


def hand_image(ids: np.ndarray, shift: int) -> np.ndarray:
    """The label colours, brightened by ``shift`` so every frame's image differs."""
    return np.clip(LABEL_ID_COLORS[np.asarray(ids)].astype(np.int16) + shift, 0, 255).astype(np.uint8)


@dataclass
class HandTree:
    """The hand-made tree: ``root`` and, per frame name, its spec (``HAND_FRAMES``) and files."""

    root: Path
    frames: dict[str, dict]
    files: dict[str, dict[str, Path]]


@pytest.fixture
def hand_tree(tmp_path) -> HandTree:
    """``train``: the three frames of ``HAND_FRAMES`` (right views too); ``val``: one frame."""
    root = tmp_path / "cityscapes"
    files = {}
    for i, (name, spec) in enumerate(HAND_FRAMES.items()):
        image = hand_image(spec["ids"], 10 * i)
        files[name] = write_frame(root, "train", spec["city"], name, image, spec["ids"], spec["disparity"],
                                  spec["camera"], right=image[:, ::-1].copy())
    val_name, source = VAL_FRAME
    spec = HAND_FRAMES[source]
    files[val_name] = write_frame(root, "val", "frankfurt", val_name, hand_image(spec["ids"], 5), spec["ids"],
                                  spec["disparity"], spec["camera"])
    return HandTree(root, HAND_FRAMES, files)


def block_arrays(size: tuple[int, int] = (32, 64), block: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """A frame of ``block x block`` squares, each with one label id, one colour and one disparity.

    Disparities are multiples of 1/128 px so that halving them stays exact in the 1/256 px
    encoding; a few blocks have none (p = 0).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    gh, gw = h // block, w // block
    ids = rng.choice([7, 8, 11, 17, 21, 23, 24, 26, 0], size=(gh, gw)).astype(np.uint8)
    disp = rng.integers(1, 8 * 128, size=(gh, gw)) / 128.0  # 1/128 .. 8 px
    disp[rng.random((gh, gw)) < 0.15] = 0
    up = lambda a: np.kron(a, np.ones((block, block), dtype=a.dtype))  # noqa: E731
    ids_full = up(ids)
    png = np.where(up(disp) > 0, np.rint(up(disp) * 256 + 1), 0).astype(np.uint16)
    image = np.clip(LABEL_ID_COLORS[ids_full].astype(np.int16) + rng.integers(-3, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    return {"image": image, "ids": ids_full, "disparity": png}


@pytest.fixture
def block_tree(tmp_path) -> Path:
    """``train``: two 32 x 64 block frames (with right views); ``val``: one. Camera: b = 0.2 m, fx = 50 px."""
    root = tmp_path / "blocks"
    camera = {"baseline": 0.2, "fx": 50.0, "fy": 50.0, "u0": 31.5, "v0": 15.5}
    for split, names in (("train", ["ulm_000000_000019", "ulm_000001_000019"]), ("val", ["lindau_000000_000019"])):
        for i, name in enumerate(names):
            a = block_arrays(seed=i + 10 * (split == "val"))
            write_frame(root, split, name.split("_")[0], name, a["image"], a["ids"], a["disparity"], camera,
                        right=np.roll(a["image"], -2, axis=1))
    return root
