"""Label sources of a folder dataset: per task, folders in order of preference, the real label
winning where the frame has one, a teacher's filling in, and each sample saying where its labels came from."""

from __future__ import annotations

import numpy as np
import pytest
from test_folder import CLASSES, H, W, frame_arrays, write_png, write_tree

from mtdense.data.folder import FolderDataset, check_sources
from mtdense.data.open import open_dataset


def teacher_arrays(seed: int) -> dict[str, np.ndarray]:
    """A teacher's mask (classes 0..4, some pixels unsure = 255) and 16-bit depth, unlike any real label."""
    rng = np.random.default_rng(100 + seed)
    mask = rng.integers(0, len(CLASSES), (H, W)).astype(np.uint8)
    mask[3, :6] = 255
    return {"mask": mask, "depth": rng.integers(1, 40000, (H, W)).astype(np.uint16)}


@pytest.fixture
def sourced(tmp_path):
    """The tree of test_folder (train: a all labels, b mask only, c depth only, d none; val: e all)
    with a teacher's masks for a, c, d (masks_t/) and its depth for a, b (depth_t/)."""
    root = tmp_path / "mine"
    frames = write_tree(root)
    teacher = {name: teacher_arrays(i) for i, name in enumerate("abcd")}
    for name in "acd":
        write_png(root / "masks_t" / "train" / f"{name}.png", teacher[name]["mask"])
    for name in "ab":
        write_png(root / "depth_t" / "train" / f"{name}.png", teacher[name]["depth"])
    write_png(root / "masks_t" / "val" / "e.png", teacher["a"]["mask"])
    return root, frames, teacher


def test_the_real_label_wins_and_a_teacher_fills_in(sourced):
    root, frames, teacher = sourced
    ds = FolderDataset(root, "train", sources={"seg": ["masks", "masks_t"], "depth": ["depth", "depth_t"]})
    a, b, c, d = (ds[i] for i in range(4))
    assert [s["name"] for s in (a, b, c, d)] == ["a", "b", "c", "d"]
    # seg: a and b have real masks; c and d take the teacher's
    np.testing.assert_array_equal(a["seg"], frames["a"]["arrays"]["mask"])
    np.testing.assert_array_equal(b["seg"], frames["b"]["arrays"]["mask"])
    np.testing.assert_array_equal(c["seg"], teacher["c"]["mask"])
    np.testing.assert_array_equal(d["seg"], teacher["d"]["mask"])
    # depth: a and c real, b the teacher's, d none at all
    np.testing.assert_array_equal(a["depth"], (frames["a"]["arrays"]["depth"] / 256.0).astype(np.float32))
    np.testing.assert_array_equal(b["depth"], (teacher["b"]["depth"] / 256.0).astype(np.float32))
    np.testing.assert_array_equal(c["depth"], (frames["c"]["arrays"]["depth"] / 256.0).astype(np.float32))
    assert not d["depth"].any()
    # normals are not in the sources: the real folder, as without sources
    assert a["sources"] == {"seg": "masks", "depth": "depth", "normals": "normals"}
    assert b["sources"] == {"seg": "masks", "depth": "depth_t", "normals": ""}
    assert c["sources"] == {"seg": "masks_t", "depth": "depth", "normals": ""}
    assert d["sources"] == {"seg": "masks_t", "depth": "", "normals": ""}
    assert c["paths"]["label"] == str(root / "masks_t" / "train" / "c.png") and d["paths"]["depth"] == ""


def test_the_order_of_the_sources_is_the_preference(sourced):
    root, frames, teacher = sourced
    ds = FolderDataset(root, "train", tasks=["seg"], sources={"seg": ["masks_t", "masks"]})
    a, b = ds[0], ds[1]
    np.testing.assert_array_equal(a["seg"], teacher["a"]["mask"])  # the teacher first: it wins where it has a label
    np.testing.assert_array_equal(b["seg"], frames["b"]["arrays"]["mask"])  # none for b: the real mask
    assert (a["sources"], b["sources"]) == ({"seg": "masks_t"}, {"seg": "masks"})
    only_teacher = FolderDataset(root, "train", tasks=["seg"], sources={"seg": ["masks_t"]})
    assert [s["sources"]["seg"] for s in only_teacher] == ["masks_t", "", "masks_t", "masks_t"]
    assert (only_teacher[1]["seg"] == 255).all()  # b's real mask is not among the sources


def test_without_sources_nothing_changes(sourced):
    root, frames, _ = sourced
    plain = FolderDataset(root, "train")
    assert plain.sources == {} and all("sources" not in s for s in plain)
    assert all(f.sources == () for f in plain.frames)
    assert (plain[3]["seg"] == 255).all()  # d: no real mask, the teacher's is not read


def test_a_task_with_teacher_labels_only(tmp_path):
    root = tmp_path / "video"
    root.mkdir()
    (root / "dataset.yaml").write_text(f"classes: {CLASSES}\n")
    for i in range(2):
        arrays = frame_arrays(i)
        write_png(root / "images" / "train" / f"f{i}.png", arrays["image"])
        write_png(root / "depth_mono" / "train" / f"f{i}.png", arrays["depth"])
    with pytest.raises(ValueError, match=r"no labels for depth \(no PNG in depth/\)"):
        FolderDataset(root, "train", tasks=["depth"])
    ds = open_dataset(root, "train", sources={"depth": ["depth", "depth_mono"]})
    assert ds.info.tasks == ("depth",) and [s["sources"] for s in ds] == [{"depth": "depth_mono"}] * 2
    np.testing.assert_array_equal(ds[1]["depth"], (frame_arrays(1)["depth"] / 256.0).astype(np.float32))


def test_bad_sources_are_refused_naming_the_folder_and_the_fix(sourced):
    root, _, _ = sourced
    with pytest.raises(FileNotFoundError, match=r"masks_x: no such label source of seg; write it with 'mtdense data teacher"):
        FolderDataset(root, "train", sources={"seg": ["masks", "masks_x"]})
    with pytest.raises(ValueError, match=r"sources of seg: depth/ holds the real depth labels"):
        check_sources(root, {"seg": ["depth"]})
    with pytest.raises(ValueError, match=r"sources of depth: images/ holds frames, not labels"):
        check_sources(root, {"depth": ["images"]})
    with pytest.raises(ValueError, match=r"'\.\./other' is not a folder name"):
        check_sources(root, {"seg": ["../other"]})
    with pytest.raises(ValueError, match=r"masks_t named twice"):
        check_sources(root, {"seg": ["masks_t", "masks_t"]})
    with pytest.raises(ValueError, match=r"'sky' is not a task"):
        check_sources(root, {"sky": ["masks_t"]})
    with pytest.raises(ValueError, match="the cityscapes format takes no sources"):
        open_dataset(root, "train", format="cityscapes", sources={"seg": ["masks_t"]})
    # a teacher's file is held to the layout rules of the real labels
    write_png(root / "masks_t" / "train" / "zz.png", np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match=r"masks_t/train/zz\.png: no image zz\.\* in"):
        FolderDataset(root, "train", sources={"seg": ["masks", "masks_t"]})
