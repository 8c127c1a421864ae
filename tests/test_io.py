"""Atomic writers: the target is the old file or the new one, never a part; failures name the path."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from mtdense.io import WriteError, atomic_path, prepare_dir, write_json_atomic, write_png_atomic, write_text_atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_png_and_json_round_trip(tmp_path):
    img = (np.arange(6 * 7 * 3) % 256).astype(np.uint8).reshape(6, 7, 3)
    write_png_atomic(tmp_path / "a" / "x.png", img)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a" / "x.png"), cv2.IMREAD_UNCHANGED), img)
    depth = np.array([[0, 65535], [256, 1]], dtype=np.uint16)
    write_png_atomic(tmp_path / "d.png", depth)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED), depth)
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 1\n}\n'
    assert _leftovers(tmp_path) == []


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed half-way")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_full_disk_leaves_no_partial_file_and_names_the_path(full_disk):
    target = full_disk / "panel.png"
    target.write_bytes(b"old")
    with pytest.raises(WriteError, match="panel.png: no space left"):
        write_text_atomic(target, "x" * 200_000)
    assert target.read_bytes() == b"old"
    assert _leftovers(full_disk) == []


def test_unwritable_places_are_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError, match=r"file: exists and is not a folder"):
        write_text_atomic(blocker / "out.json", "{}")
    with pytest.raises(WriteError, match="is a folder"):
        write_text_atomic(tmp_path, "{}")
    with pytest.raises(WriteError, match="exists and is not a folder"):
        prepare_dir(blocker)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(WriteError, match="permission denied"):
            write_text_atomic(ro / "x.txt", "x")


def test_read_yaml_and_json_name_the_file_and_the_fix(tmp_path):
    from mtdense.io import read_json, read_yaml

    (tmp_path / "ok.yaml").write_text("classes: [road, car]\n")
    (tmp_path / "ok.json").write_text('{"miou": 0.5}')
    assert read_yaml(tmp_path / "ok.yaml") == {"classes": ["road", "car"]}
    assert read_json(tmp_path / "ok.json") == {"miou": 0.5}
    (tmp_path / "bad.yaml").write_text("classes: [road, car\n")
    (tmp_path / "bad.json").write_text("{miou: 0.5}")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"bad\.yaml: not readable YAML \(.*\); fix the syntax"):
        read_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match=r"bad\.json: not readable JSON \(.*\); give a metrics\.json"):
        read_json(tmp_path / "bad.json", fix="give a metrics.json")
    with pytest.raises(ValueError, match=r"binary\.yaml: not readable YAML"):
        read_yaml(tmp_path / "binary.yaml")
    with pytest.raises(FileNotFoundError, match=r"none\.yaml: no such class map; write one"):
        read_yaml(tmp_path / "none.yaml", "class map", "write one")
