"""``mtdense predict`` over many inputs when some fail: too large, out of memory, corrupt, killed.

The contract: a failing input is reported in one line naming it (``skipped FILE: what; fix``),
the others are written, a summary ends the run, the exit status is 1 if any input failed; memory
at the original size grows with its pixels, not pixels x classes; a killed run leaves whole files.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import mtdense
from mtdense.cli import build_parser, main
from mtdense.inference import Predictor

OUTPUTS = ("trainIds", "labelIds", "depth", "panel")


def write_rgb(path: Path, h: int = 64, w: int = 96, seed: int = 0) -> Path:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def written(out: Path, stem: str) -> bool:
    return all((out / f"{stem}_{name}.png").is_file() for name in OUTPUTS)


def nothing_for(out: Path, stem: str) -> bool:
    return not list(out.glob(f"{stem}_*")) and not list(out.glob(f".{stem}_*"))


def test_an_image_over_max_pixels_is_refused_by_name_before_decoding(ckpt, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    write_rgb(src / "a_big.png", 200, 300)  # 60 000 pixels, over the limit passed below
    write_rgb(src / "b_small.png", 64, 96)
    import mtdense.inference as inference

    decoded = []
    real_read = inference.read_image
    monkeypatch.setattr(inference, "read_image", lambda path, *a, **k: decoded.append(Path(path).name) or real_read(path, *a, **k))
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "--out", str(out), "--max-pixels", "10000"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {src / 'a_big.png'}: 300 x 200 = 0.06 MP is over --max-pixels 0.01 MP; pass --max-pixels 0" in err
    assert decoded == ["b_small.png"]  # the big one was refused from its header
    assert nothing_for(out, "a_big") and written(out, "b_small")
    # 0 lifts the limit
    assert main(["predict", str(ckpt), str(src / "a_big.png"), "--out", str(out), "--max-pixels", "0"]) == 0
    assert written(out, "a_big")


def test_the_default_limit_is_50_megapixels_and_decoded_images_are_checked_too(model, tmp_path, monkeypatch):
    args = build_parser().parse_args(["predict", "m.pth", "x.png", "--out", "o"])
    assert args.max_pixels is None and Predictor(model).max_pixels == 50_000_000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "m.pth", "x.png", "--out", "o", "--max-pixels", "-1"])
    # a file whose header Pillow cannot read is checked once decoded, still by name
    path = write_rgb(tmp_path / "odd.png", 64, 96)
    import mtdense.inference as inference

    monkeypatch.setattr(inference, "_header_pixels", lambda path: None)
    with pytest.raises(inference.ImageTooLarge, match="odd.png: 96 x 64"):
        Predictor(model, max_pixels=1000).read_image(path)


def test_a_video_over_max_pixels_is_refused_before_its_first_frame(ckpt, tmp_path, capsys):
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 64))
    assert writer.isOpened()
    for i in range(3):
        writer.write(np.full((64, 128, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(video), "--out", str(out), "--max-pixels", "5000"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {video}: 128 x 64 = 0.00819 MP is over --max-pixels 0.005 MP" in err and "resize the video" in err
    assert not list(out.iterdir())


OOMS = {
    "cpu allocator": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                                          "you tried to allocate 8208000000 bytes. Error code 12 (Cannot allocate memory)"),
    "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.20 GiB"),
    "python": lambda: MemoryError(),
}


@pytest.mark.parametrize("kind", sorted(OOMS))
def test_out_of_memory_on_one_image_is_reported_and_the_next_runs(ckpt, tmp_path, capsys, monkeypatch, kind):
    src = tmp_path / "in"
    src.mkdir()
    write_rgb(src / "a_huge.png", 96, 64)  # its own size picks it out below
    write_rgb(src / "b.png", 64, 96, seed=1)
    write_rgb(src / "c.png", 64, 96, seed=2)
    real_postprocess = Predictor.postprocess

    def postprocess(self, out, out_size=None):  # labels and metres at the image's size: where a large image runs out
        if tuple(out_size) == (96, 64):
            raise OOMS[kind]()
        return real_postprocess(self, out, out_size)

    monkeypatch.setattr(Predictor, "postprocess", postprocess)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith(f"skipped {src / 'a_huge.png'}: out of memory")
    assert "--size" in lines[0] and "Traceback" not in captured.err
    assert nothing_for(out, "a_huge") and written(out, "b") and written(out, "c")
    assert "2 input(s) written" in captured.out and "1 skipped" in captured.out


def test_an_unexpected_error_in_one_image_is_not_swallowed(ckpt, tmp_path, monkeypatch):
    """Only faults of an input are skipped; a bug reaches the CLI's boundary."""
    write_rgb(tmp_path / "a.png")

    def broken(self, out, out_size=None):
        raise RuntimeError("some bug in the code")

    monkeypatch.setattr(Predictor, "postprocess", broken)
    args = build_parser().parse_args(["predict", str(ckpt), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")])
    with pytest.raises(RuntimeError, match="some bug"):
        args.func(args)


def test_corrupt_and_truncated_images_are_skipped_and_the_rest_written(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    full_png = write_rgb(tmp_path / "full.png", 64, 96, seed=3).read_bytes()
    (src / "cut.png").write_bytes(full_png[: len(full_png) // 2])
    full_jpg = write_rgb(tmp_path / "full.jpg", 64, 96, seed=4).read_bytes()
    (src / "cut.jpg").write_bytes(full_jpg[: len(full_jpg) * 2 // 3])
    (src / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    write_rgb(src / "good1.png", 64, 96, seed=5)
    write_rgb(src / "good2.jpg", 48, 80, seed=6)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    skipped = sorted(line.split(":")[0] for line in captured.err.splitlines() if line.startswith("skipped "))
    assert skipped == [f"skipped {src / name}" for name in ("cut.jpg", "cut.png", "noise.png")]
    for stem in ("cut", "noise"):
        assert nothing_for(out, stem)
    assert written(out, "good1") and written(out, "good2")
    assert "2 input(s) written" in captured.out and "3 skipped" in captured.out


def test_labels_at_the_original_size_never_hold_every_class_at_once(model, monkeypatch):
    """Every tensor resized to the image's size has one channel: labels one class at a time, depth alone."""
    calls = []
    real = F.interpolate

    def recording(x, size=None, *args, **kwargs):
        y = real(x, size, *args, **kwargs)
        calls.append((tuple(y.shape[-2:]), y.shape[1]))
        return y

    monkeypatch.setattr(F, "interpolate", recording)
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    pred = Predictor(model, size=(64, 96)).predict(image)
    assert pred.seg.shape == (300, 400) and pred.seg.dtype == np.uint8 and pred.depth.dtype == np.float32
    at_output = [channels for shape, channels in calls if shape == (300, 400)]
    assert len(at_output) == 19 + 1  # each class, then depth
    assert max(at_output) == 1


@pytest.mark.slow
def test_peak_memory_of_a_large_image_grows_with_pixels_not_classes(ckpt, tmp_path):
    """A 6 MP image run at 64 x 128: the peak grows by far less than one 19-class float map of it (456 MB)."""
    script = textwrap.dedent(f"""
        import resource, numpy as np
        from mtdense.inference import Predictor
        p = Predictor({str(ckpt)!r}, size=(64, 128))
        image = np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
        p.predict(image[:64, :128])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pred = p.predict(image)
        assert pred.seg.shape == (2000, 3000)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.split()[-1])
    pixels_x_classes = 2000 * 3000 * 19 * 4
    assert grown < pixels_x_classes / 3, f"peak grew by {grown / 1e6:.0f} MB"


def _is_temporary(name: str) -> bool:
    """The names :func:`mtdense.io.atomic_path` gives its files: hidden, ``.STEM.XXXX.part.SUFFIX``."""
    return name.startswith(".") and ".part" in name


def _decodes_completely(path: Path) -> bool:
    if cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
        return False
    try:
        with Image.open(path) as im:
            im.load()  # Pillow refuses a truncated PNG
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_only_whole_files(ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sizes = {}
    for i in range(8):
        sizes[f"img{i}"] = (240 + 8 * i, 480)
        write_rgb(src / f"img{i}.png", *sizes[f"img{i}"], seed=i)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed_mid_run = 0
    for n, delay in enumerate((0.0, 0.05, 0.2, 0.45)):
        out = tmp_path / f"out{n}"
        proc = subprocess.Popen([sys.executable, "-m", "mtdense.cli", "predict", str(ckpt), str(src), "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline and not (out.is_dir() and any(out.iterdir())):
                time.sleep(0.005)  # until the first file appears: the kill lands among the writes
            time.sleep(delay)
            if proc.poll() is None:
                killed_mid_run += 1
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        for f in out.iterdir() if out.is_dir() else []:
            if _is_temporary(f.name):
                continue  # a temporary file the kill left: hidden, never taken for an output
            assert not f.name.startswith("."), f"unexpected hidden file {f.name}"
            stem, kind = f.stem.rsplit("_", 1)
            assert stem in sizes and kind in OUTPUTS, f.name
            assert _decodes_completely(f), f"{f.name} is a partial file (kill after {delay} s)"
            h, w = sizes[stem]
            shape = cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape
            assert shape[0] == h and (kind == "panel" or shape[:2] == (h, w))
    assert killed_mid_run >= 2  # the kills landed while the run was writing
