"""The three-stage pipeline of ``mtdense predict`` for videos and folders (mtdense.pipeline).

What it guarantees: frames and images in order, every one counted (read == written + skipped),
a faulty frame or image reported in one line and skipped, a failing stage ending the run
without a hung thread, queues that never hold more than their size, and one PyTorch thread
while a runtime other than PyTorch runs the network.
"""

import os
import re
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mtdense
from mtdense import pipeline
from mtdense.cli import main
from mtdense.inference import Predictor
from mtdense.pipeline import Item, VideoReader, predict_images, predict_video, run_pipeline

H, W = 64, 96
LEVELS = [12 + 19 * i for i in range(12)]  # frame i is a solid grey of LEVELS[i]


@pytest.fixture(scope="module")
def ort(model):
    return Predictor(model, size=(H, W), backend="ort")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "grey.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    assert writer.isOpened()
    for level in LEVELS:
        writer.write(np.full((H, W, 3), level, np.uint8))
    writer.release()
    return path


def frame_level(rgb: np.ndarray) -> int:
    return int(round(float(rgb.mean())))


def index_of(level: float) -> int:
    return int(np.argmin([abs(level - x) for x in LEVELS]))


def annotated_indices(path: Path) -> list[int]:
    """The input frame index each annotated frame shows (its image tile below the title)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    found = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape[0] == H and frame.shape[1] > 3 * W
        found.append(index_of(frame[40:60, 10:W - 10].mean()))
    cap.release()
    return found


def finishes(fn, timeout: float = 60.0):
    """Run ``fn`` in a thread; fail (instead of hanging) if it does not return in time. Returns
    ``(result, exception)``."""
    box = {}

    def call():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"the run did not end within {timeout} s"
    assert not [t.name for t in threading.enumerate() if t.name.startswith("mtdense-")], "a stage thread is still alive"
    return box.get("result"), box.get("error")


def test_video_frames_keep_their_order_and_count(ort, video, tmp_path):
    out = tmp_path / "grey_annotated.mp4"
    summary = predict_video(ort, video, out, maxsize=2)
    assert (summary.read, summary.written, summary.skipped) == (len(LEVELS), len(LEVELS), 0)
    assert summary.inferred == len(LEVELS) and summary.fps > 0 and summary.model_fps > 0
    assert max(summary.max_queued) <= 2
    assert annotated_indices(out) == list(range(len(LEVELS)))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_failing_frame_is_reported_by_index_and_skipped(ort, video, tmp_path, monkeypatch):
    real = ort.preprocess

    def preprocess(images):
        if index_of(frame_level(images[0])) == 5:
            raise ValueError("cannot use this frame")
        return real(images)

    monkeypatch.setattr(ort, "preprocess", preprocess)
    lines = []
    out = tmp_path / "a.mp4"
    summary = predict_video(ort, video, out, report=lines.append)
    assert lines == [f"skipped {video} frame 5: cannot use this frame"]
    assert (summary.read, summary.written, summary.skipped) == (12, 11, 1)
    assert annotated_indices(out) == [i for i in range(12) if i != 5]


def test_frames_the_container_announces_but_cannot_decode_are_counted(video):
    reader = VideoReader(video)
    reader.announced = len(LEVELS) + 3  # as a truncated file's container would say
    items = list(reader)
    assert [it.index for it in items[:-1]] == list(range(len(LEVELS)))
    last = items[-1]
    assert last.count == 3 and last.name == f"{video} frames 12-14" and "announces 15 frames" in str(last.error)


def test_a_corrupt_image_in_a_folder_is_reported_and_the_others_written(ort, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        assert cv2.imwrite(str(src / name), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    out = tmp_path / "out"
    out.mkdir()
    lines, done = [], []
    inputs = [(src / n, Path(n).stem) for n in ("a.png", "b.png", "c.png")]
    summary = predict_images(ort, inputs, out, report=lines.append, progress=done.append)
    assert len(lines) == 1 and lines[0].startswith(f"skipped {src / 'b.png'}: cannot decode")
    assert (summary.read, summary.written, summary.skipped, summary.skipped_names) == (3, 2, 1, [str(src / "b.png")])
    assert sum(done) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}_{k}.png" for s in "ac" for k in ("trainIds", "labelIds", "depth", "panel"))
    # the files are exactly what Predictor.predict gives
    want = ort.predict(src / "c.png")
    np.testing.assert_array_equal(cv2.imread(str(out / "c_trainIds.png"), cv2.IMREAD_UNCHANGED), want.seg)
    np.testing.assert_array_equal(cv2.imread(str(out / "c_depth.png"), cv2.IMREAD_UNCHANGED), want.depth_png16())


@pytest.mark.parametrize("stage", ["reader", "inference", "writer"])
def test_an_exception_in_a_stage_ends_the_run_without_hanging(ort, video, tmp_path, monkeypatch, stage):
    def bug(*args, **kwargs):
        if bug.calls == 3:
            raise RuntimeError(f"a bug in the {stage}")
        bug.calls += 1
        return real(*args, **kwargs)

    bug.calls = 0
    if stage == "reader":
        real = ort.preprocess
        monkeypatch.setattr(ort, "preprocess", bug)
    elif stage == "inference":
        real = pipeline._infer
        monkeypatch.setattr(pipeline, "_infer", bug)
    else:
        real = ort.postprocess
        monkeypatch.setattr(ort, "postprocess", bug)
    out = tmp_path / "a.mp4"
    _, error = finishes(lambda: predict_video(ort, video, out, maxsize=1))
    assert isinstance(error, RuntimeError) and str(error) == f"a bug in the {stage}"
    assert not list(tmp_path.iterdir())  # neither the target nor its temporary file


def test_queues_hold_at_most_their_size_behind_a_slow_writer():
    read, lead = [], []

    def source():
        for i in range(30):
            read.append(i)
            yield Item(index=i, name=f"item {i}", path=Path("x"))

    def finish(item):
        lead.append(len(read) - 1 - item.index)  # how far the reader got ahead of the writer
        time.sleep(0.01)
        order.append(item.index)
        nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform.startswith("linux") else None)

    order, nice = [], set()
    summary, error = finishes(lambda: run_pipeline(source(), lambda it: None, lambda it: None, finish, maxsize=3))
    assert error is None
    assert order == list(range(30)) and (summary.read, summary.written, summary.skipped) == (30, 30, 0)
    assert max(summary.max_queued) <= 3
    assert 3 <= max(lead) <= 2 * 3 + 2  # it ran ahead, but never further than the queues hold
    if sys.platform.startswith("linux"):  # the writer gives way to the network's threads
        assert nice == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + pipeline.HELPER_NICE)}


def test_helpers_keep_one_torch_and_one_opencv_thread_beside_the_network_and_give_them_back(model, ort, video, tmp_path,
                                                                                          monkeypatch):
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        seen = {}
        for name, predictor in (("ort", ort), ("eager", Predictor(model, size=(H, W)))):
            pre, post = predictor.preprocess, predictor.postprocess
            record = seen.setdefault(name, set())

            def counts(record=record):
                record.add((torch.get_num_threads(), cv2.getNumThreads()))

            monkeypatch.setattr(predictor, "preprocess", lambda images, pre=pre, counts=counts: counts() or pre(images))
            monkeypatch.setattr(predictor, "postprocess", lambda *a, post=post, counts=counts: counts() or post(*a))
            predict_video(predictor, video, tmp_path / f"{name}.mp4")
            assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
        # PyTorch's threads are the network's under eager; OpenCV's pool stays off the cores of
        # a network on the CPU either way
        assert seen == {"ort": {(1, 1)}, "eager": {(2, 1)}}
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_helper_threads_leave_opencv_its_pool_beside_a_gpu_network():
    from mtdense.inference import helper_threads

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:
        with helper_threads("ONNX Runtime", "cuda"):
            assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 2)
            with helper_threads("ONNX Runtime", "cuda"):  # nested: restored once, by the outermost
                pass
            assert torch.get_num_threads() == 1
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


def test_predict_cli_runs_videos_and_folders_through_the_pipeline(ckpt, video, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    (src / "clip.mp4").write_bytes(video.read_bytes())
    assert cv2.imwrite(str(src / "one.png"), np.full((H, W, 3), 90, np.uint8))
    (src / "two.png").write_bytes(b"not an image")
    real = Predictor.preprocess

    def preprocess(self, images):
        if index_of(frame_level(images[0])) == 7:
            raise ValueError("cannot use this frame")
        return real(self, images)

    monkeypatch.setattr(Predictor, "preprocess", preprocess)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "--out", str(out), "--size", str(H), str(W), "--backend", "ort"]) == 1
    captured = capsys.readouterr()
    err = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", captured.err)  # the progress bars' cursor moves
    skipped = [line for line in re.split(r"[\r\n]", err) if line.startswith("skipped ")]
    assert skipped == [f"skipped {src / 'clip.mp4'} frame 7: cannot use this frame",
                       f"skipped {src / 'two.png'}: cannot decode this image (corrupt, truncated or not an image format OpenCV reads); "
                       "replace it with a good copy, or delete it"]
    assert "11 frames written (1 of 12 frames skipped)" in captured.out
    assert f"2 input(s) written to {out}; 1 skipped: {src / 'two.png'}; 1 video frame(s) skipped" in captured.out
    assert annotated_indices(out / "clip_annotated.mp4") == [i for i in range(12) if i != 7]
    assert (out / "one_panel.png").is_file()


def test_bench_video_prints_end_to_end_next_to_the_network(ckpt, video, capsys):
    assert main(["bench", str(ckpt), "--video", str(video), "--backend", "ort", "--size", str(H), str(W), "--repeats", "1"]) == 0
    text = capsys.readouterr().out
    for words in ("network alone", "end to end", "end to end / network", "load average"):
        assert words in text
