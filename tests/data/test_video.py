"""``mtdense data frames``: frames of small generated clips into a folder dataset, with picking,
near-duplicates, resume, name clashes and damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mtdense.cli import main
from mtdense.data.check import check_folder_dataset
from mtdense.data.folder import list_folder_frames
from mtdense.data.video import FrameSampling, extract_frames

H, W = 48, 64


def frame_pixels(i: int) -> np.ndarray:
    """A distinct BGR picture per index: a grey level and a bright bar that moves."""
    f = np.full((H, W, 3), 20 + 25 * (i % 9), np.uint8)
    f[:, (6 * i) % (W - 6):(6 * i) % (W - 6) + 6] = (255, 128, 0)
    return f


def make_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame as OpenCV decodes it (what the PNGs must hold, MJPG being lossy)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def jpeg_starts(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 2) if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i + 2] == 0xFF]


def png_names(root: Path, split: str = "train") -> list[str]:
    return sorted(p.name for p in (root / "images" / split).glob("*.png"))


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_clip(tmp_path / "videos" / "drive.avi", [frame_pixels(i) for i in range(8)])


def test_every_frame_is_written_losslessly_with_its_video_and_index(tmp_path, clip, capsys):
    root = tmp_path / "ds"
    assert main(["data", "frames", str(clip), "--out", str(root), "--split", "train", "--classes", "road", "car",
                 "--quiet"]) == 0
    assert png_names(root) == [f"drive_{i:06d}.png" for i in range(8)]
    for i, want in enumerate(decoded(clip)):
        got = cv2.imread(str(root / "images" / "train" / f"drive_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, want)
    assert yaml.safe_load((root / "dataset.yaml").read_text()) == {"classes": ["road", "car"], "depth_scale": 256.0}
    assert [f.name for f in list_folder_frames(root, "train")] == [f"drive_{i:06d}" for i in range(8)]
    report = check_folder_dataset(root, progress=False)
    assert report.ok and not report.warnings, report.summary()
    record = json.loads((root / "images" / "train_frames.json").read_text())
    assert record["videos"]["drive"]["file"] == "drive.avi" and record["videos"]["drive"]["frames"] == 8


def test_picking_by_every_fps_max_and_size(tmp_path):
    clip = make_clip(tmp_path / "v" / "c.avi", [frame_pixels(i) for i in range(12)], fps=10.0)
    s = extract_frames(clip, tmp_path / "a", sampling=FrameSampling(every=3), progress=False)
    assert png_names(tmp_path / "a") == [f"c_{i:06d}.png" for i in (0, 3, 6, 9)] and s.written == 4
    extract_frames(clip, tmp_path / "b", sampling=FrameSampling(fps=4.0), progress=False)
    # 4 of 10 frames per second: the first frame of each 0.25 s slot.
    assert png_names(tmp_path / "b") == [f"c_{i:06d}.png" for i in (0, 3, 5, 8, 10)]
    extract_frames(clip, tmp_path / "c", sampling=FrameSampling(every=2, max_frames=3, size=(24, 40)), progress=False)
    names = png_names(tmp_path / "c")
    assert names == [f"c_{i:06d}.png" for i in (0, 2, 4)]
    frames = decoded(clip)
    for name, i in zip(names, (0, 2, 4)):
        got = cv2.imread(str(tmp_path / "c" / "images" / "train" / name))
        np.testing.assert_array_equal(got, cv2.resize(frames[i], (40, 24), interpolation=cv2.INTER_AREA))


def test_near_duplicates_are_left_out(tmp_path):
    pics = [frame_pixels(0), frame_pixels(0), frame_pixels(0), frame_pixels(1), frame_pixels(1), frame_pixels(2)]
    clip = make_clip(tmp_path / "v" / "still.avi", pics)
    s = extract_frames(clip, tmp_path / "ds", sampling=FrameSampling(min_change=4.0), progress=False)
    assert png_names(tmp_path / "ds") == ["still_000000.png", "still_000003.png", "still_000005.png"]
    assert s.near_duplicates == 3 and s.written == 3


def test_a_rerun_resumes_and_redoes_only_what_is_missing(tmp_path, clip):
    root = tmp_path / "ds"
    first = extract_frames(clip, root, progress=False)
    assert first.written == 8
    missing = root / "images" / "train" / "drive_000005.png"
    missing.unlink()
    kept = root / "images" / "train" / "drive_000002.png"
    before = kept.stat().st_mtime_ns
    second = extract_frames(clip, root, progress=False)
    assert (second.written, second.kept) == (1, 7) and missing.is_file()
    assert kept.stat().st_mtime_ns == before
    # The same video under another folder is the same recording: same names, nothing redone.
    moved = clip.rename(tmp_path / "drive.avi")
    third = extract_frames(moved, root, progress=False)
    assert (third.written, third.kept) == (0, 8) and len(png_names(root)) == 8
    with pytest.raises(ValueError, match=r"drive\.avi: extracted into .* before with other settings \(--every 1, not --every 2\)"):
        extract_frames(moved, root, sampling=FrameSampling(every=2), progress=False)


def test_several_videos_of_one_name_go_into_one_split_without_a_clash(tmp_path, capsys):
    a = make_clip(tmp_path / "a" / "clip.avi", [frame_pixels(i) for i in range(3)])
    b = make_clip(tmp_path / "b" / "clip.avi", [frame_pixels(i + 4) for i in range(4)])
    c = make_clip(tmp_path / "a" / "clip.mp4.avi", [frame_pixels(7)])
    root = tmp_path / "ds"
    assert main(["data", "frames", str(tmp_path / "a"), "--out", str(root), "--quiet"]) == 0
    assert main(["data", "frames", str(b), "--out", str(root), "--quiet"]) == 0
    names = png_names(root)
    assert names == ["clip-2_000000.png", "clip-2_000001.png", "clip-2_000002.png", "clip-2_000003.png",
                     "clip.mp4_000000.png", "clip_000000.png", "clip_000001.png", "clip_000002.png"]
    np.testing.assert_array_equal(cv2.imread(str(root / "images/train/clip-2_000000.png")), decoded(b)[0])
    np.testing.assert_array_equal(cv2.imread(str(root / "images/train/clip_000000.png")), decoded(a)[0])
    np.testing.assert_array_equal(cv2.imread(str(root / "images/train/clip.mp4_000000.png")), decoded(c)[0])
    # Rerunning the first folder finds its names again.
    assert main(["data", "frames", str(tmp_path / "a"), "--out", str(root), "--quiet"]) == 0
    assert png_names(root) == names


def test_an_unreadable_frame_is_reported_by_name_and_the_rest_written(tmp_path, clip, capsys):
    data = bytearray(clip.read_bytes())
    start = jpeg_starts(bytes(data))[3]
    data[start + 2: start + 200] = bytes(198)  # frame 3 loses its JPEG tables and start of scan
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    root = tmp_path / "ds"
    assert main(["data", "frames", str(damaged), "--out", str(root), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {damaged} frame 3: could not be decoded" in err
    assert png_names(root) == [f"damaged_{i:06d}.png" for i in (0, 1, 2, 4, 5, 6, 7)]
    good = decoded(clip)
    np.testing.assert_array_equal(cv2.imread(str(root / "images/train/damaged_000004.png")), good[4])


def test_a_truncated_video_reports_the_frames_it_lost(tmp_path, clip, capsys):
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: jpeg_starts(data)[5] + 40])
    root = tmp_path / "ds"
    assert main(["data", "frames", str(cut), "--out", str(root), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {cut} frames 5-7: could not be decoded" in err
    assert png_names(root) == [f"cut_{i:06d}.png" for i in range(5)]


def test_bad_inputs_are_refused_naming_the_file(tmp_path, clip, capsys):
    root = tmp_path / "ds"
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), frame_pixels(0))
    assert main(["data", "frames", str(image), "--out", str(root)]) == 2
    assert f"{image}: an image, not a video" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "frames", str(empty), "--out", str(root)]) == 2
    assert f"{empty}: no video files in this folder" in capsys.readouterr().err
    junk = tmp_path / "junk" / "noise.mp4"
    junk.parent.mkdir()
    junk.write_bytes(b"not a video at all" * 50)
    assert main(["data", "frames", str(junk), "--out", str(root)]) == 2
    assert f"{junk}: OpenCV cannot open this video" in capsys.readouterr().err
    assert not (root / "images" / "train").exists() or not png_names(root)
    # In a folder, the bad video is skipped by name and the good one extracted.
    clip.rename(junk.parent / "good.avi")
    assert main(["data", "frames", str(junk.parent), "--out", str(root), "--quiet"]) == 1
    assert f"skipped {junk}: OpenCV cannot open this video" in capsys.readouterr().err
    assert len(png_names(root)) == 8 and "noise" not in json.loads((root / "images/train_frames.json").read_text())["videos"]
    (root / "dataset.yaml").write_text("classes: [road, car]\n")
    assert main(["data", "frames", str(junk.parent / "good.avi"), "--out", str(root), "--classes", "sky"]) == 2
    assert f"{root / 'dataset.yaml'}: exists with classes ['road', 'car']" in capsys.readouterr().err
    assert main(["data", "frames", str(junk.parent / "good.avi"), "--out", str(root), "--every", "0"]) == 2
    assert "--every must be a whole number >= 1" in capsys.readouterr().err


def test_classes_from_a_teacher(tmp_path, clip, ckpt):
    root = tmp_path / "ds"
    assert main(["data", "frames", str(clip), "--out", str(root), "--classes-from", str(ckpt), "--quiet", "--max", "1"]) == 0
    classes = yaml.safe_load((root / "dataset.yaml").read_text())["classes"]
    assert len(classes) == 19 and classes[0] == "road"
    cmap = tmp_path / "map.yaml"
    cmap.write_text("teacher_classes: [bg, person, bike]\nmap: {person: person}\n")
    root2 = tmp_path / "ds2"
    assert main(["data", "frames", str(clip), "--out", str(root2), "--classes-from", str(cmap), "--quiet", "--max", "1"]) == 0
    assert yaml.safe_load((root2 / "dataset.yaml").read_text())["classes"] == ["bg", "person", "bike"]
