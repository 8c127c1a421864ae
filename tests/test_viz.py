"""Panels and analysis plots."""

import cv2
import numpy as np
import pytest

from mtdense.data.labels import TRAIN_PALETTE
from mtdense.viz import (
    colorize_depth, depth_scale_bar, make_panel, overlay_segmentation, plot_class_iou, plot_confusion_matrix,
    plot_depth_histograms, plot_error_vs_distance,
)


def test_overlay_uses_the_palette_and_leaves_ignore_alone():
    image = np.full((4, 6, 3), 100, np.uint8)
    seg = np.zeros((4, 6), np.uint8)
    seg[:, 3:] = 13  # car
    seg[0, 0] = 255
    full = overlay_segmentation(image, seg, alpha=1.0)
    np.testing.assert_array_equal(full[1, 4], TRAIN_PALETTE[13])
    np.testing.assert_array_equal(full[1, 1], TRAIN_PALETTE[0])
    np.testing.assert_array_equal(full[0, 0], image[0, 0])  # ignore: the image shows through
    half = overlay_segmentation(image, seg, alpha=0.5)
    assert abs(int(half[1, 4, 0]) - (100 + int(TRAIN_PALETTE[13][0])) / 2) <= 1
    with pytest.raises(ValueError, match="differ"):
        overlay_segmentation(image, seg[:2])


def test_depth_colours_are_monotonic_and_invalid_is_black():
    depth = np.array([[0.0, 1.0, 10.0, 100.0, np.nan, 500.0]], np.float32)
    rgb = colorize_depth(depth, (1.0, 100.0), cmap="gray")
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 6, 3)
    np.testing.assert_array_equal(rgb[0, 0], 0)
    np.testing.assert_array_equal(rgb[0, 4], 0)
    grey = rgb[0, [1, 2, 3], 0].astype(int)
    assert grey[0] < grey[1] < grey[2]  # log scale: 10 m sits half way
    assert abs(grey[1] - 128) <= 1
    np.testing.assert_array_equal(rgb[0, 5], rgb[0, 3])  # beyond the range: clipped
    with pytest.raises(ValueError, match="near < far"):
        colorize_depth(depth, (10.0, 1.0))


def test_panel_and_scale_bar_sizes():
    image = np.zeros((60, 80, 3), np.uint8)
    seg = np.zeros((60, 80), np.uint8)
    depth = np.full((60, 80), 5.0, np.float32)
    bar = depth_scale_bar(60, width=70)
    assert bar.shape == (60, 70, 3)
    assert (bar != 255).any()  # colour strip and labels drawn
    panel = make_panel(image, seg, depth, title="12.3 FPS")
    assert panel.shape[0] == 60 and panel.shape[1] > 3 * 80 and panel.dtype == np.uint8
    assert (panel[:, :80] != 0).any()  # the title box is drawn on the image tile
    np.testing.assert_array_equal(image, 0)  # the input is not modified


def test_analysis_plots_write_files(tmp_path):
    edges = np.linspace(0, 250, 1001)
    rng = np.random.default_rng(0)
    paths = [
        plot_depth_histograms(edges, rng.integers(0, 50, 1000), rng.integers(0, 50, 1000), tmp_path / "h.png"),
        plot_class_iou(list(rng.random(18)) + [float("nan")], tmp_path / "iou.png"),
        plot_confusion_matrix(rng.integers(0, 100, (19, 19)), tmp_path / "cm.png"),
        plot_error_vs_distance([0, 5, 10, 50], [0.1, float("nan"), 0.3], [10, 0, 5], tmp_path / "err.png"),
    ]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="19 class"):
        plot_class_iou([0.5] * 3, tmp_path / "x.png")
    with pytest.raises(ValueError, match="bins"):
        plot_depth_histograms(edges, np.zeros(10), np.zeros(1000), tmp_path / "y.png")


def test_overlay_and_panel_take_a_dataset_palette():
    palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], np.uint8)
    image = np.full((2, 5, 3), 100, np.uint8)
    seg = np.array([[0, 1, 2, 3, 255], [2, 2, 2, 200, 0]], np.uint8)  # 3 and 200: no class
    out = overlay_segmentation(image, seg, alpha=0.5, palette=palette)
    for (r, c), k in {(0, 0): 0, (0, 1): 1, (0, 2): 2, (1, 4): 0}.items():
        np.testing.assert_array_equal(out[r, c], (image[r, c].astype(int) + palette[k]) // 2)
    for r, c in ((0, 3), (0, 4), (1, 3)):  # ignore and values past K: the image shows through
        np.testing.assert_array_equal(out[r, c], image[r, c])
    wide = overlay_segmentation(image, seg.astype(np.int64) * 2 - 1, alpha=1.0, palette=palette)  # -1: no class
    np.testing.assert_array_equal(wide[0, 0], image[0, 0])
    np.testing.assert_array_equal(wide[0, 1], palette[1])
    depth = np.full((2, 5), 5.0, np.float32)
    panel = make_panel(image, seg, depth, alpha=0.5, palette=palette)
    np.testing.assert_array_equal(panel[:, 5:10], out)
    np.testing.assert_array_equal(make_panel(image, seg, depth)[:, 5:10], overlay_segmentation(image, seg))  # Cityscapes
    with pytest.raises(ValueError, match="K x 3"):
        overlay_segmentation(image, seg, palette=np.zeros((3, 4), np.uint8))


def test_palette_table_colours_classes_only():
    from mtdense.viz import palette_table

    table, coloured = palette_table()
    assert table.shape == (1, 256, 3) and coloured.shape == (256,)
    np.testing.assert_array_equal(table[0, :19], TRAIN_PALETTE)
    assert (coloured[:19] == 255).all() and (coloured[19:] == 0).all()
    table, coloured = palette_table([[1, 2, 3]])
    np.testing.assert_array_equal(table[0, 0], [1, 2, 3])
    assert coloured[0] == 255 and (coloured[1:] == 0).all()


def test_class_plots_take_the_names(tmp_path):
    names = ["floor", "wall", "person"]
    assert plot_class_iou([0.5, float("nan"), 0.2], tmp_path / "iou.png", names=names).is_file()
    assert plot_confusion_matrix(np.eye(3) * 10, tmp_path / "cm.png", names=names).is_file()
    with pytest.raises(ValueError, match="3 class names"):
        plot_class_iou([0.5, 0.1], tmp_path / "bad.png", names=names)


def test_depth_colours_follow_the_log_scale_definition():
    """The OpenCV colouring equals round(log-scale position * 255) through the colour map, up to
    one index step where the logarithm's last bit decides the rounding; invalid pixels are black."""
    from mtdense.viz import _depth_to_unit, _lut

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 150.0, (64, 96)).astype(np.float32)
    depth[::7, ::5] = 0.0
    depth[3, :10], depth[4, :5], depth[5, :5] = np.nan, np.inf, -3.0
    valid = np.isfinite(depth) & (depth > 0)
    idx = (_depth_to_unit(np.where(valid, depth, 1.0), (1.0, 100.0)) * 255).round().astype(int)
    got = colorize_depth(depth, (1.0, 100.0), cmap="gray")  # grey: the colour is the index
    assert np.all(got[~valid] == 0)
    assert np.abs(got[valid][:, 0].astype(int) - idx[valid]).max() <= 1
    assert np.mean(got[valid][:, 0].astype(int) == idx[valid]) > 0.999
    with pytest.raises(ValueError, match="H x W"):
        colorize_depth(depth[None], (1.0, 100.0))


def test_normals_colours_and_panel_tile():
    from mtdense.viz import colorize_normals, make_panel

    n = np.zeros((2, 3, 3), np.float32)
    n[0, 0] = (0, 0, -1)  # a wall facing the camera
    n[0, 1] = (0, -1, 0)  # the ground
    n[0, 2] = (-1, 0, 0)  # a wall on the right, facing left
    n[1, 0] = np.nan  # no normal, as (1, 1) and (1, 2): all zero
    rgb = colorize_normals(n)
    assert rgb[0].tolist() == [[128, 128, 0], [128, 0, 128], [0, 128, 128]]
    assert not rgb[1].any()
    image = np.full((2, 3, 3), 100, np.uint8)
    seg = np.zeros((2, 3), np.uint8)
    depth = np.full((2, 3), 5.0, np.float32)
    plain = make_panel(image, seg, depth)
    panel = make_panel(image, seg, depth, normals=n)
    assert panel.shape[1] == plain.shape[1] + 3
    np.testing.assert_array_equal(panel[:, : plain.shape[1]], plain)
    np.testing.assert_array_equal(panel[:, -3:], rgb)
    with pytest.raises(ValueError, match=r"normals \(2, 3\) must be H x W x 3"):
        make_panel(image, seg, depth, normals=n[..., 0])


@pytest.mark.parametrize("trial", range(4))
def test_bgr_panel_equals_the_rgb_panel_converted(trial):
    """Writers take the panel drawn in BGR from the start; it is the RGB panel, channel-swapped,
    whatever the palette, ignore labels, invalid depth, title and normals tile."""
    rng = np.random.default_rng(trial)
    h, w = (int(v) for v in rng.integers(20, 90, 2))
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg = rng.integers(0, 12, (h, w)).astype(np.uint8)
    seg[rng.random((h, w)) < 0.1] = 255
    depth = rng.uniform(0.2, 150, (h, w)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = np.nan
    depth[0, :3] = 0.0
    normals = None
    if trial % 2:
        normals = rng.normal(size=(h, w, 3)).astype(np.float32)
        normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    palette = None if trial < 2 else rng.integers(0, 256, (9, 3)).astype(np.uint8)  # 9 classes: 9..11 stay uncoloured
    kw = dict(depth_range=(1.0, 80.0), alpha=0.4, title="model 12.3 FPS (cpu)", palette=palette, normals=normals)
    rgb = make_panel(image, seg, depth, **kw)
    bgr = make_panel(image, seg, depth, bgr=True, **kw)
    np.testing.assert_array_equal(bgr, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(rgb[:, w : 2 * w], overlay_segmentation(image, seg, 0.4, palette))
    np.testing.assert_array_equal(rgb[:, 2 * w : 3 * w], colorize_depth(depth, (1.0, 80.0)))
    assert not rgb[0, 2 * w : 2 * w + 3].any()  # depth 0: black


@pytest.mark.parametrize("shape", [(1, 1), (4, 1), (1, 3), (2, 2), (3, 1)])
def test_tiny_depth_maps_get_the_colours_of_the_same_values_in_a_large_one(shape):
    """OpenCV's arithmetic reads an array of up to 4 values as a scalar; a clicked pixel (1 x 1)
    or a thin strip is coloured as the same depth anywhere else."""
    values = np.array([0.5, 2.0, 5.0, 20.0, 80.0, np.nan], np.float32)[: shape[0] * shape[1]]
    large = np.full((8, 8), 3.0, np.float32)
    large.flat[: values.size] = values
    expected = colorize_depth(large, (1.0, 100.0)).reshape(-1, 3)[: values.size]
    np.testing.assert_array_equal(colorize_depth(values.reshape(shape), (1.0, 100.0)).reshape(-1, 3), expected)
