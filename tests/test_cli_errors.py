"""Bad inputs replayed against every command that reads them, in-process through ``mtdense.cli.main``.

Every case asserts the exit code, exactly one line of message on stderr (``mtdense CMD: error: ...``
for a refusal, ``skipped ...`` for one failed item of a many-item command; progress bars and
warnings aside) naming the file, no traceback, and no partial output file (whatever output
exists is complete: PNGs decode, JSON parses, ONNX loads; no temporary ``.part`` file left).

The matrix (ids as in the test report):

- images, predict (one bad image before a good one; exit 1, the good one written):
  corrupt PNG, truncated JPEG, empty file, a text file named .png
- videos, predict: a text file named .mp4 (exit 1, the good image written)
- checkpoints, for predict, export, evaluate, info, bench and data pseudo-label (exit 2):
  truncated .pth, a pickle carrying code (refused without running it: its marker file is never
  made), weights of another model config, a .txt, a missing file
- data trees:
  evaluate (exit 2): missing root, missing gtFine/, a label PNG of the wrong size, an unknown
  class id, a NaN in a camera file (NaN depth), a corrupt image;
  data teacher / cache / pseudo-label (exit 1, the other frame done, a summary): a corrupt
  left image, an empty right view, an unreadable disparity, a label of the wrong size;
  and a missing split (exit 2)
- recipes, train (exit 2): unknown key, wrong type, missing data.root, YAML syntax error,
  no such recipe, a --set value of the wrong type
- output paths (exit 2): --out under a regular file, --out equal to a regular file (a folder
  for export, whose --out is a file), --out in a read-only folder, for export, predict,
  evaluate and train; a data command's output folder under a regular file
- the boundary itself: an unexpected error is one line and exit 3, its traceback only with
  --debug or MTDENSE_DEBUG=1; Ctrl-C is one line and exit 130; a multi-line message becomes
  one line; an OSError is named by its file; a MemoryError says to use fewer pixels
- slow: SIGKILL of ``mtdense export`` at several moments leaves no .onnx or a complete one
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mtdense
from mtdense.cli import main
from mtdense.data.labels import LABEL_ID_COLORS
from mtdense.models.factory import CHECKPOINT_FORMAT

SIZE = (64, 128)
SPLIT, CITY = "val", "ulm"
FRAMES = [f"{CITY}_{i:06d}_000019" for i in range(2)]  # FRAMES[0] sorts first: it is the one broken
MESSAGE = re.compile(r"^(mtdense [\w -]+: (internal )?error: |mtdense [\w -]+: interrupted|skipped )")


# --- files --------------------------------------------------------------------------------------

def street(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 128 RGB street and its label ids."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    ids = np.full((h, w), 11, np.uint8)
    ids[: h // 4] = 23
    ids[h // 2:] = 7
    ids[h // 2 - 6: h // 2 + 8, 20 + 10 * seed: 50 + 10 * seed] = 26
    rgb = np.clip(LABEL_ID_COLORS[ids].astype(np.int16) + rng.integers(-15, 16, (h, w, 3)), 0, 255).astype(np.uint8)
    return rgb, ids


def imwrite(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def make_tree(root: Path) -> Path:
    """A Cityscapes-layout tree: splits train and val, two 64 x 128 frames each, every file kind."""
    h, w = SIZE
    for split in ("train", SPLIT):
        for i, name in enumerate(FRAMES):
            rgb, ids = street(i)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            imwrite(root / "leftImg8bit" / split / CITY / f"{name}_leftImg8bit.png", bgr)
            imwrite(root / "rightImg8bit" / split / CITY / f"{name}_rightImg8bit.png", np.roll(bgr, -2, axis=1))
            imwrite(root / "gtFine" / split / CITY / f"{name}_gtFine_labelIds.png", ids)
            rows = np.arange(h)[:, None].repeat(w, 1)
            disp = np.where(rows > h // 2, (rows - h // 2 + 1) * 0.8, 0.6)
            imwrite(root / "disparity" / split / CITY / f"{name}_disparity.png", np.round(disp * 256 + 1).astype(np.uint16))
            cam = root / "camera" / split / CITY / f"{name}_camera.json"
            cam.parent.mkdir(parents=True, exist_ok=True)
            cam.write_text(json.dumps({"extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1,
                                                     "yaw": -0.02, "z": 1.3},
                                       "intrinsic": {"fx": 141.4, "fy": 141.4, "u0": w / 2, "v0": h / 2}}))
    return root


def frame_file(root: Path, folder: str, name: str, suffix: str) -> Path:
    return root / folder / SPLIT / CITY / f"{name}_{suffix}"


def good_png_bytes() -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(street(0)[0], cv2.COLOR_RGB2BGR))[1].tobytes()


def good_jpeg_bytes() -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(street(0)[0], cv2.COLOR_RGB2BGR))[1].tobytes()


BAD_IMAGES: dict[str, tuple[str, Callable[[], bytes]]] = {
    # PNG signature and header intact, the pixel data cut and replaced by noise
    "corrupt-png": (".png", lambda: good_png_bytes()[:200] + np.random.default_rng(1).bytes(2000)),
    "truncated-jpeg": (".jpg", lambda: good_jpeg_bytes()[: len(good_jpeg_bytes()) * 2 // 3]),
    "empty-file": (".png", lambda: b""),
    "text-as-png": (".png", lambda: b"this is not an image\n"),
}


class Evil:
    """Pickles to a call of ``os.system``: a checkpoint that would run code when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_checkpoints(folder: Path) -> dict[str, Path]:
    """A good tiny checkpoint and the bad ones, by case name."""
    torch.manual_seed(0)
    model = mtdense.create_model(decoder_channels=16)
    good = mtdense.save_checkpoint(model, folder / "good.pth")
    data = good.read_bytes()
    truncated = folder / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    code = folder / "code.pth"
    torch.save({"format": CHECKPOINT_FORMAT, "config": model.config, "state_dict": model.state_dict(),
                "extra": Evil(folder / "MARKER")}, code)
    other = folder / "other_config.pth"
    wider = mtdense.create_model(decoder_channels=32)
    torch.save({"format": CHECKPOINT_FORMAT, "config": model.config, "state_dict": wider.state_dict()}, other)
    txt = folder / "notes.txt"
    txt.write_text("these are not weights\n")
    return {"good": good, "truncated-pth": truncated, "code-pickle": code, "other-config": other, "text-file": txt,
            "missing-file": folder / "missing.pth"}


# --- what every case asserts --------------------------------------------------------------------

def message_lines(err: str) -> list[str]:
    """The lines of stderr that are messages (progress bars and warnings left out)."""
    return [line.strip() for line in re.split(r"[\r\n]+", err) if MESSAGE.match(line.strip())]


def assert_complete(path: Path) -> None:
    """Every file at or under ``path`` is whole: no temporary file, and each decodes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    for f in files:
        assert ".part" not in f.name, f"temporary file left: {f}"
        suffix = f.suffix.lower()
        if suffix in (".png", ".jpg"):
            assert cv2.imdecode(np.fromfile(f, np.uint8), cv2.IMREAD_UNCHANGED) is not None, f"undecodable {f}"
        elif suffix == ".json":
            json.loads(f.read_text())
        elif suffix == ".onnx":
            import onnx

            onnx.checker.check_model(onnx.load(str(f)))
        elif suffix in (".pth", ".ckpt"):
            torch.load(f, map_location="cpu", weights_only=True)


@dataclass
class Run:
    """One invocation and what it must leave behind."""

    argv: list[str]
    names: str  # the file the message must name (a fragment of its path)
    outputs: list[Path] = field(default_factory=list)  # output files or folders: complete or absent
    check: Callable[[], None] | None = None  # case-specific guarantees (the rest done, no marker, ...)
    says: str = ""  # what the message must say besides


class Env:
    """A test's folder, the module's checkpoints and a fresh copy of the tree on demand."""

    def __init__(self, tmp: Path, ckpts: dict[str, Path], tree_src: Path):
        self.tmp, self.ckpts, self.tree_src = tmp, ckpts, tree_src
        self.out = tmp / "out"
        self._tree: Path | None = None
        self._mounts: list[Path] = []

    @property
    def tree(self) -> Path:
        if self._tree is None:
            self._tree = Path(shutil.copytree(self.tree_src, self.tmp / "cityscapes"))
        return self._tree

    def file(self, name: str, data: bytes) -> Path:
        path = self.tmp / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def good_image(self, name: str = "good.png") -> Path:
        return self.file(name, good_png_bytes())

    def regular_file(self, name: str = "blocker") -> Path:
        return self.file(name, b"a regular file\n")

    def read_only(self) -> Path:
        """A folder nothing can be written in: chmod 555, or as root (who ignores modes) a read-only tmpfs."""
        path = self.tmp / "ro"
        path.mkdir()
        if os.geteuid() != 0:
            path.chmod(0o555)
            return path
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"running as root and cannot mount a read-only tmpfs ({proc.stderr.strip()})")
        self._mounts.append(path)
        return path

    def close(self) -> None:
        for path in self._mounts:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        ro = self.tmp / "ro"
        if ro.is_dir() and os.geteuid() != 0:
            ro.chmod(0o755)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="module")
def tree_src(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "cityscapes")


@pytest.fixture
def env(tmp_path, ckpts, tree_src):
    e = Env(tmp_path, ckpts, tree_src)
    yield e
    e.close()


# --- the matrix ---------------------------------------------------------------------------------

CASES: list = []


def case(case_id: str, rc: int, marks=()):
    def register(build: Callable[[Env], Run]):
        CASES.append(pytest.param(build, rc, id=case_id, marks=marks))
        return build
    return register


def _predict_bad_input(suffix: str, data: Callable[[], bytes]):
    def build(env: Env) -> Run:
        bad = env.file(f"bad{suffix}", data())
        good = env.good_image()

        def check():
            assert (env.out / "good_trainIds.png").is_file(), "the good image after the bad one was not written"
            assert not list(env.out.glob("bad_*")), "outputs written for the bad input"
        return Run(["predict", str(env.ckpts["good"]), str(bad), str(good), "--out", str(env.out)], bad.name, [env.out], check)
    return build


for _name, (_suffix, _data) in BAD_IMAGES.items():
    case(f"predict-image-{_name}", 1)(_predict_bad_input(_suffix, _data))
case("predict-video-text-as-mp4", 1)(_predict_bad_input(".mp4", lambda: b"this is not a video\n"))


# checkpoints x every command that reads one
def _ckpt_argv(command: str, env: Env, ckpt: Path) -> tuple[list[str], list[Path]]:
    if command == "predict":
        return ["predict", str(ckpt), str(env.good_image()), "--out", str(env.out)], [env.out]
    if command == "export":
        return ["export", str(ckpt), "--out", str(env.out / "m.onnx"), "--size", *map(str, SIZE)], [env.out]
    if command == "evaluate":
        return ["evaluate", str(ckpt), "--data", str(env.tree), "--out", str(env.out), "--workers", "0"], [env.out]
    if command == "info":
        return ["info", "--checkpoint", str(ckpt), "--size", *map(str, SIZE)], []
    if command == "bench":
        return ["bench", str(ckpt), "--size", *map(str, SIZE), "--runs", "1", "--warmup", "0", "--backends", "eager"], []
    if command == "pseudo-label":
        return (["data", "pseudo-label", str(ckpt), str(env.tree), "--split", SPLIT, "--out", "gtPseudo", "--overwrite"],
                [env.tree / "gtPseudo"])
    raise AssertionError(command)


CHECKPOINT_SAYS = {
    "truncated-pth": "may be truncated", "code-pickle": "could run code", "other-config": "do not fit",
    "text-file": "not a checkpoint", "missing-file": "not found",
}


def _ckpt_case(command: str, kind: str):
    def build(env: Env) -> Run:
        ckpt = env.ckpts[kind]
        argv, outputs = _ckpt_argv(command, env, ckpt)

        def check():
            assert not (ckpt.parent / "MARKER").exists(), "the checkpoint's code ran"
        return Run(argv, ckpt.name, outputs, check, says=CHECKPOINT_SAYS[kind])
    return build


for _command in ("predict", "export", "evaluate", "info", "bench", "pseudo-label"):
    for _kind in ("truncated-pth", "code-pickle", "other-config", "text-file", "missing-file"):
        case(f"{_command}-checkpoint-{_kind}", 2)(_ckpt_case(_command, _kind))


# data trees: evaluate refuses
def _evaluate(env: Env, data: Path | None = None) -> list[str]:
    return ["evaluate", str(env.ckpts["good"]), "--data", str(data or env.tree), "--out", str(env.out), "--workers", "0"]


@case("evaluate-tree-missing-root", 2)
def _(env):
    return Run(_evaluate(env, env.tmp / "no_such_root"), "no_such_root", [env.out])


@case("evaluate-tree-missing-gtFine", 2)
def _(env):
    shutil.rmtree(env.tree / "gtFine")
    return Run(_evaluate(env), "gtFine", [env.out])


@case("evaluate-tree-label-wrong-size", 2)
def _(env):
    label = imwrite(frame_file(env.tree, "gtFine", FRAMES[1], "gtFine_labelIds.png"), np.full((32, 64), 7, np.uint8))
    return Run(_evaluate(env), label.name, [env.out])


@case("evaluate-tree-label-unknown-class-id", 2)
def _(env):
    ids = street(1)[1]
    ids[5, 5] = 77
    label = imwrite(frame_file(env.tree, "gtFine", FRAMES[1], "gtFine_labelIds.png"), ids)
    return Run(_evaluate(env), label.name, [env.out])


@case("evaluate-tree-camera-nan-depth", 2)
def _(env):
    cam = frame_file(env.tree, "camera", FRAMES[1], "camera.json")
    data = json.loads(cam.read_text())
    data["intrinsic"]["fx"] = float("nan")
    cam.write_text(json.dumps(data))
    return Run(_evaluate(env), cam.name, [env.out])


@case("evaluate-tree-corrupt-image", 2)
def _(env):
    image = frame_file(env.tree, "leftImg8bit", FRAMES[1], "leftImg8bit.png")
    image.write_bytes(BAD_IMAGES["corrupt-png"][1]())
    return Run(_evaluate(env), image.name, [env.out])


# data trees: the many-item data commands skip the bad frame and do the rest
def _teacher(env: Env) -> list[str]:
    return ["data", "teacher", str(env.tree), "--split", SPLIT, "--out", "disparity_sgbm"]


def _cache(env: Env) -> list[str]:
    return ["data", "cache", str(env.tree), str(env.out), "--scale", "0.5", "--splits", SPLIT, "--workers", "1"]


def _pseudo(env: Env) -> list[str]:
    return ["data", "pseudo-label", str(env.ckpts["good"]), str(env.tree), "--split", SPLIT, "--out", "gtPseudo", "--overwrite"]


def _many_item_case(command: str, folder: str, suffix: str, data: Callable[[], bytes]):
    argv, done = {
        "teacher": (_teacher, lambda env: frame_file(env.tree, "disparity_sgbm", FRAMES[1], "disparity.png")),
        "cache": (_cache, lambda env: frame_file(env.out, "leftImg8bit", FRAMES[1], "leftImg8bit.png")),
        "pseudo-label": (_pseudo, lambda env: frame_file(env.tree, "gtPseudo", FRAMES[1], "gtFine_labelIds.png")),
    }[command]
    out_folder = {"teacher": "disparity_sgbm", "pseudo-label": "gtPseudo"}

    def build(env: Env) -> Run:
        bad = frame_file(env.tree, folder, FRAMES[0], suffix)
        bad.write_bytes(data())
        outputs = [env.tree / out_folder[command]] if command in out_folder else [env.out]

        def check():
            assert done(env).is_file(), "the good frame after the bad one was not done"
        return Run(argv(env), bad.name, outputs, check)
    return build


def _label_wrong_size() -> bytes:
    return cv2.imencode(".png", np.full((32, 64), 7, np.uint8))[1].tobytes()


for _command, _what, _folder, _suffix, _data in [
    ("teacher", "left-corrupt-png", "leftImg8bit", "leftImg8bit.png", BAD_IMAGES["corrupt-png"][1]),
    ("teacher", "right-empty-file", "rightImg8bit", "rightImg8bit.png", BAD_IMAGES["empty-file"][1]),
    ("cache", "left-corrupt-png", "leftImg8bit", "leftImg8bit.png", BAD_IMAGES["corrupt-png"][1]),
    ("cache", "disparity-unreadable", "disparity", "disparity.png", BAD_IMAGES["text-as-png"][1]),
    ("cache", "label-wrong-size", "gtFine", "gtFine_labelIds.png", _label_wrong_size),
    ("pseudo-label", "left-corrupt-png", "leftImg8bit", "leftImg8bit.png", BAD_IMAGES["corrupt-png"][1]),
    ("pseudo-label", "left-text-as-png", "leftImg8bit", "leftImg8bit.png", BAD_IMAGES["text-as-png"][1]),
]:
    case(f"{_command}-tree-{_what}", 1)(_many_item_case(_command, _folder, _suffix, _data))


@case("teacher-tree-missing-split", 2)
def _(env):
    return Run(["data", "teacher", str(env.tree), "--split", "nosplit"], "nosplit", [env.tree / "disparity_sgbm"])


@case("cache-tree-missing-split", 2)
def _(env):
    return Run(["data", "cache", str(env.tree), str(env.out), "--scale", "0.5", "--splits", "nosplit"], "nosplit", [env.out])


@case("pseudo-label-tree-missing-split", 2)
def _(env):
    return Run(["data", "pseudo-label", str(env.ckpts["good"]), str(env.tree), "--split", "nosplit", "--out", "gtPseudo"],
               "nosplit", [env.tree / "gtPseudo"])


# recipes
def _recipe(env: Env, **changes) -> dict:
    recipe = {
        "name": "tiny",
        "data": {"root": str(env.tree), "num_workers": 0},
        "model": {"encoder": "mobilenet_v3_small", "decoder_channels": 16, "pretrained": False},
        "stages": [{"name": "s0", "size": list(SIZE), "epochs": 1, "batch_size": 2, "lr": 2e-3}],
        "trainer": {"accelerator": "cpu", "devices": 1, "limit_train_batches": 1, "limit_val_batches": 1,
                    "progress_bar": False},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if value is None:
            del recipe[section][name]
        else:
            recipe[section][name] = value
    return recipe


def _write_recipe(env: Env, recipe: dict | str) -> Path:
    import yaml

    path = env.tmp / "recipe.yaml"
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    return path


@case("train-recipe-unknown-key", 2)
def _(env):
    path = _write_recipe(env, _recipe(env, model__encoder_name="mobilenet_v3_small"))
    return Run(["train", str(path), "--out", str(env.out)], "encoder_name", [env.out])


@case("train-recipe-wrong-type", 2)
def _(env):
    recipe = _recipe(env)
    recipe["stages"][0]["epochs"] = "two"
    return Run(["train", str(_write_recipe(env, recipe)), "--out", str(env.out)], "epochs", [env.out])


@case("train-recipe-missing-data-root", 2)
def _(env):
    path = _write_recipe(env, _recipe(env, data__root=None))
    return Run(["train", str(path), "--out", str(env.out)], "data.root", [env.out])


@case("train-recipe-yaml-syntax-error", 2)
def _(env):
    path = _write_recipe(env, "name: tiny\nstages: [{epochs: 1\n")
    return Run(["train", str(path), "--out", str(env.out)], path.name, [env.out])


@case("train-recipe-missing-file", 2)
def _(env):
    return Run(["train", str(env.tmp / "no_recipe.yaml"), "--out", str(env.out)], "no_recipe", [env.out])


@case("train-recipe-bad-set-value", 2)
def _(env):
    path = _write_recipe(env, _recipe(env))
    return Run(["train", str(path), "--out", str(env.out), "--set", "stages.0.batch_size=many"], "batch_size", [env.out])


# output paths
def _out_argv(command: str, env: Env, out: Path) -> list[str]:
    ckpt = str(env.ckpts["good"])
    if command == "export":
        return ["export", ckpt, "--out", str(out), "--size", *map(str, SIZE), "--check-images", "1"]
    if command == "predict":
        return ["predict", ckpt, str(env.good_image()), "--out", str(out)]
    if command == "evaluate":
        return ["evaluate", ckpt, "--data", str(env.tree), "--out", str(out), "--workers", "0"]
    if command == "train":
        return ["train", str(_write_recipe(env, _recipe(env))), "--out", str(out)]
    raise AssertionError(command)


def _out_case(command: str, where: str):
    def build(env: Env) -> Run:
        leaf = "m.onnx" if command == "export" else "run"
        if where == "under-regular-file":
            blocker = env.regular_file()
            out, name = blocker / leaf, blocker.name
        elif where == "equal-to-regular-file" and command == "export":
            out = env.tmp / "inputs" / "m.onnx"  # export's --out is a file: here a folder stands in its place
            out.mkdir(parents=True)
            name = out.name
        elif where == "equal-to-regular-file":
            out = env.regular_file()
            name = out.name
        else:
            out, name = env.read_only() / leaf, "ro"
        return Run(_out_argv(command, env, out), name, [out, env.tmp / "inputs"])
    return build


for _command in ("export", "predict", "evaluate", "train"):
    for _where in ("under-regular-file", "equal-to-regular-file", "read-only-folder"):
        case(f"{_command}-out-{_where}", 2)(_out_case(_command, _where))


@case("teacher-out-under-regular-file", 2)
def _(env):
    (env.tree / "blocker").write_text("a regular file\n")
    return Run(_teacher(env)[:-2] + ["--out", "blocker"], "blocker", [env.tree / "blocker"])


@case("pseudo-label-out-under-regular-file", 2)
def _(env):
    (env.tree / "blocker").write_text("a regular file\n")
    return Run(_pseudo(env)[:-3] + ["--out", "blocker", "--overwrite"], "blocker", [env.tree / "blocker"])


@case("cache-out-equal-to-regular-file", 2)
def _(env):
    blocker = env.regular_file()
    return Run(["data", "cache", str(env.tree), str(blocker), "--scale", "0.5", "--splits", SPLIT], blocker.name, [blocker])


@pytest.mark.parametrize("build, rc", CASES)
def test_bad_input(build, rc, env, capsys):
    run = build(env)
    got = main(run.argv)
    out, err = capsys.readouterr()
    lines = message_lines(err)
    assert got == rc, f"exit {got}, expected {rc}; stderr:\n{err}"
    assert "Traceback" not in out + err
    assert len(lines) == 1, f"expected one message line, got {lines}; stderr:\n{err}"
    line = lines[0]
    command = " ".join(run.argv[:2]) if run.argv[0] == "data" else run.argv[0]
    if rc == 2:
        assert line.startswith(f"mtdense {command}: error: "), line
    else:
        assert line.startswith("skipped "), line
        assert re.search(r"\b1 (failed|skipped)\b", out), f"no summary naming the failure count in:\n{out}"
    assert run.names in line, f"{run.names!r} not named in: {line}"
    assert run.says in line, f"{run.says!r} not said in: {line}"
    assert "weights_only=False" not in line  # never the advice to unpickle
    for path in run.outputs:
        assert_complete(path)
    assert not [p for p in env.tmp.rglob("*") if ".part" in p.name], "temporary files left"
    if run.check:
        run.check()


# --- what a many-item run keeps of its failures -------------------------------------------------

def test_a_failed_frame_is_recorded_and_leaves_nothing_behind(env, capsys):
    """The teacher's summary and the pseudo-label record list the failed frame; the cache writes
    none of a failed frame's files (not its image when its label is bad), so a rerun completes it."""
    label = frame_file(env.tree, "gtFine", FRAMES[0], "gtFine_labelIds.png")
    label.write_bytes(_label_wrong_size())
    left = frame_file(env.tree, "leftImg8bit", FRAMES[1], "leftImg8bit.png")
    right = frame_file(env.tree, "rightImg8bit", FRAMES[0], "rightImg8bit.png")
    right_bytes = right.read_bytes()
    right.write_bytes(b"")

    assert main(_cache(env)) == 1
    assert not list(env.out.rglob(f"{FRAMES[0]}_*")), "files of the failed frame were cached"
    assert frame_file(env.out, "gtFine", FRAMES[1], "gtFine_labelIds.png").is_file()

    assert main(_teacher(env)) == 1
    summary = json.loads((env.tree / "disparity_sgbm" / f"{SPLIT}_summary.json").read_text())
    assert list(summary["failed"]) == [str(frame_file(env.tree, "leftImg8bit", FRAMES[0], "leftImg8bit.png"))]
    assert right.name in summary["failed"][str(frame_file(env.tree, "leftImg8bit", FRAMES[0], "leftImg8bit.png"))]
    right.write_bytes(right_bytes)
    assert main(_teacher(env)) == 0  # the rerun computes the missing frame and keeps the other

    left.write_bytes(b"not an image")
    assert main(_pseudo(env)) == 1
    record = json.loads((env.tree / "gtPseudo" / f"{SPLIT}_pseudo_labels.json").read_text())
    assert record["labelled"] == [FRAMES[0]]
    assert list(record["summary"]["failed"]) == [str(left)]
    capsys.readouterr()


# --- the boundary itself ------------------------------------------------------------------------

def _raise(exc: BaseException):
    def run(args):
        raise exc
    return run


def test_unexpected_error_is_one_line_and_exit_3(monkeypatch, capsys):
    monkeypatch.delenv("MTDENSE_DEBUG", raising=False)
    monkeypatch.setattr("mtdense.commands.info.run", _raise(TypeError("unsupported operand")))
    assert main(["info"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message_lines(err) == [line.strip() for line in err.strip().splitlines()]
    (line,) = message_lines(err)
    assert line.startswith("mtdense info: internal error: TypeError: unsupported operand")
    assert "--debug" in line and "report" in line


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback(how, monkeypatch, capsys):
    monkeypatch.setattr("mtdense.commands.info.run", _raise(TypeError("unsupported operand")))
    if how == "flag":
        monkeypatch.delenv("MTDENSE_DEBUG", raising=False)
        rc = main(["--debug", "info"])
    else:
        monkeypatch.setenv("MTDENSE_DEBUG", "1")
        rc = main(["info"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError: unsupported operand" in err
    assert "mtdense info: internal error: TypeError" in err


def test_debug_shows_the_traceback_of_an_expected_error_too(monkeypatch, capsys):
    monkeypatch.setattr("mtdense.commands.info.run", _raise(ValueError("x.png: broken; replace it")))
    assert main(["--debug", "info"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "mtdense info: error: x.png: broken; replace it" in err


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    monkeypatch.delenv("MTDENSE_DEBUG", raising=False)
    monkeypatch.setattr("mtdense.commands.info.run", _raise(KeyboardInterrupt()))
    assert main(["info"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["mtdense info: interrupted"]


@pytest.mark.parametrize("exc, rc, wants", [
    pytest.param(ValueError("a.png: first line\n  second line\n"), 2, ["a.png: first line", "second line"], id="multi-line-message"),
    pytest.param(PermissionError(13, "Permission denied", "/some/where/model.pth"), 2, ["/some/where/model.pth", "ermission denied"],
                 id="oserror-named-by-its-filename"),
    pytest.param(IsADirectoryError(21, "Is a directory", "/some/folder"), 2, ["/some/folder", "give a file"], id="is-a-directory"),
    pytest.param(MemoryError(), 2, ["--size"], id="memory-error"),
    pytest.param(MemoryError("can't allocate 8 GB"), 2, ["can't allocate 8 GB", "--size"], id="memory-error-with-message"),
])
def test_expected_errors_are_one_line(exc, rc, wants, monkeypatch, capsys):
    monkeypatch.delenv("MTDENSE_DEBUG", raising=False)
    monkeypatch.setattr("mtdense.commands.info.run", _raise(exc))
    assert main(["info"]) == rc
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mtdense info: error: ")
    for want in wants:
        assert want in err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for code in ("0", "1", "2", "3", "130"):
        assert re.search(rf"^\s+{code}\s", text, re.M), f"exit code {code} not documented"
    assert "--debug" in text and "MTDENSE_DEBUG" in text


# --- SIGKILL of export --------------------------------------------------------------------------

@pytest.mark.slow
def test_killed_export_leaves_no_partial_onnx(ckpts, tmp_path):
    """SIGKILL of ``mtdense export`` at several moments: m.onnx is absent or a complete, valid graph.

    The file is written in the last few tens of milliseconds of a run that takes seconds, so the
    kills are timed from the moment its temporary file appears (0 and 10 ms later: while it is
    written; 300 ms: after the rename, in the parity check), plus one early kill; the four runs go
    side by side to keep the test short.
    """
    import onnx

    moments = [("write", 0.0), ("write", 0.01), ("write", 0.3), ("start", 3.0)]
    runs = []
    for i, (_, delay) in enumerate(moments):
        out = tmp_path / f"k{i}" / "m.onnx"
        out.parent.mkdir()
        argv = [sys.executable, "-m", "mtdense.cli", "export", str(ckpts["good"]), "--out", str(out),
                "--size", *map(str, SIZE), "--static", "--check-images", "1"]  # --static: the quicker export
        runs.append({"out": out, "proc": subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                     "t0": time.monotonic(), "from": moments[i][0], "delay": delay, "seen": None})
    deadline = time.monotonic() + 120
    while any(r["proc"].poll() is None for r in runs) and time.monotonic() < deadline:
        now = time.monotonic()
        for r in runs:
            if r["proc"].poll() is not None:
                continue
            if r["from"] == "write" and r["seen"] is None and any(".part" in p.name for p in r["out"].parent.iterdir()):
                r["seen"] = now
            start = r["t0"] if r["from"] == "start" else r["seen"]
            if start is not None and now - start >= r["delay"]:
                r["proc"].send_signal(signal.SIGKILL)
        time.sleep(0.001)
    outcomes = []
    for r in runs:
        if r["proc"].poll() is None:
            r["proc"].kill()
        r["proc"].wait()
        # a killed process cannot remove its hidden temporary file; what matters is m.onnx
        if r["out"].exists():
            onnx.checker.check_model(onnx.load(str(r["out"])))
        outcomes.append((r["from"], r["delay"], "complete" if r["out"].exists() else "absent", r["proc"].returncode))
    assert any(r["seen"] is not None for r in runs), f"no export got as far as writing, nothing was tested: {outcomes}"


def test_the_command_exits_with_mains_status_and_freezes_the_collector_first(monkeypatch, tmp_path):
    """``mtdense`` (the console script, ``python -m mtdense.cli``) exits with :func:`main`'s status,
    after gc.freeze() (a quicker interpreter exit); main() called from Python leaves the collector alone."""
    import gc

    from mtdense import cli

    argv = ["predict", str(tmp_path / "no-such.pth"), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append("freeze"))
    assert main(argv) == 2 and frozen == []
    monkeypatch.setattr(cli, "main", lambda: frozen.append("main") or 2)
    with pytest.raises(SystemExit) as exc:
        cli.entry()
    assert exc.value.code == 2 and frozen == ["main", "freeze"]
    proc = subprocess.run([sys.executable, "-m", "mtdense.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "mtdense predict: error:" in proc.stderr and not (tmp_path / "out").exists()
