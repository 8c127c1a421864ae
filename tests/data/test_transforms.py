"""Joint transforms: one draw for image, seg and depth; nearest neighbour; padding; depth unchanged by resizing."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtdense.data.cityscapes import CityscapesDataset
from mtdense.data.labels import IGNORE_INDEX, TRAIN_PALETTE
from mtdense.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

H, W = 32, 64


def coded_sample():
    """Each pixel's image value encodes its own (x, y); seg and depth are functions of (x, y)."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x * 4, y * 8, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    seg = ((x // 4 + 3 * (y // 4)) % 19).astype(np.uint8)
    seg[0, :] = IGNORE_INDEX
    depth = (1.0 + x + 100.0 * y).astype(np.float32)
    depth[:, 0] = 0.0  # invalid column
    return {"image": image, "seg": seg, "depth": depth, "name": "coded",
            "camera": {"baseline": 0.2, "fx": 100.0, "fy": 100.0, "u0": 32.0, "v0": 16.0},
            "paths": {"image": "img.png", "label": "lab.png", "disparity": "disp.png"}}


def denormalize(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image * std + mean) * 255).permute(1, 2, 0).numpy()


def test_one_random_draw_moves_image_seg_and_depth_together():
    src = coded_sample()
    # box area 16 x 32 = 1/4 of the input: crops without resampling, so every output pixel is a
    # source pixel, and the image says which one
    t = TrainTransform(size=(16, 32), scale=(0.25, 0.25), color_jitter=False, hflip=0.5)
    flips, origins = 0, set()
    for _ in range(20):
        out = t(src)
        assert set(out) == {"image", "seg", "depth", "name"}
        rgb = denormalize(out["image"])
        xs, ys = np.rint(rgb[..., 0] / 4).astype(int), np.rint(rgb[..., 1] / 8).astype(int)
        np.testing.assert_allclose(rgb[..., 0], xs * 4, atol=1e-3)
        np.testing.assert_array_equal(out["seg"].numpy(), src["seg"][ys, xs])
        np.testing.assert_array_equal(out["depth"].numpy(), src["depth"][ys, xs])
        step = np.diff(xs, axis=1)
        assert (step == 1).all() or (step == -1).all()
        flips += int(step[0, 0] == -1)
        origins.add((ys.min(), xs.min()))
    assert 0 < flips < 20 and len(origins) > 5  # it flipped sometimes, and crops moved


def test_resized_crop_keeps_maps_aligned_with_the_image_and_uses_nearest_neighbour():
    # 8 x 8 blocks of one class, one palette colour and one depth each
    y, x = np.mgrid[0:H, 0:W]
    seg = ((x // 8 + 5 * (y // 8)) % 19).astype(np.uint8)
    depth_of_class = np.linspace(2.0, 80.0, 19).astype(np.float32)
    src = {"image": TRAIN_PALETTE[seg], "seg": seg, "depth": depth_of_class[seg], "name": "blocks"}
    t = TrainTransform(size=(24, 40), scale=(0.3, 1.0), color_jitter=False)
    for _ in range(10):
        out = t(src)
        seg_out, depth_out = out["seg"].numpy(), out["depth"].numpy()
        assert set(np.unique(seg_out)) <= set(np.unique(seg))  # no new label values
        assert set(np.unique(depth_out)) <= set(np.unique(src["depth"]))  # no interpolated depths
        np.testing.assert_array_equal(depth_out, depth_of_class[seg_out])  # same pixel picked for both
        rgb = denormalize(out["image"])
        # away from block edges the bilinear image shows the colour of the class under it
        pad = np.pad(seg_out, 1, mode="edge")
        interior = np.ones_like(seg_out, bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= pad[1 + dy: 1 + dy + seg_out.shape[0], 1 + dx: 1 + dx + seg_out.shape[1]] == seg_out
        assert interior.mean() > 0.3
        np.testing.assert_allclose(rgb[interior], TRAIN_PALETTE[seg_out[interior]], atol=2.0)


def test_zoom_out_pads_image_0_seg_255_depth_0():
    src = coded_sample()
    src["seg"][:] = 3
    src["depth"][:] = 7.5
    src["image"][:] = 200
    # the box is twice the input in each direction and as large as the output: no resampling
    t = TrainTransform(size=(64, 128), scale=(4.0, 4.0), color_jitter=False, hflip=0)
    for _ in range(5):
        out = t(src)
        seg, depth, rgb = out["seg"].numpy(), out["depth"].numpy(), denormalize(out["image"])
        inside = seg == 3
        assert set(np.unique(seg)) == {3, IGNORE_INDEX}
        assert inside.sum() == H * W  # all of the input is in the box, the rest is padding
        np.testing.assert_array_equal(depth[inside], 7.5)
        np.testing.assert_array_equal(depth[~inside], 0.0)
        np.testing.assert_allclose(rgb[~inside], 0.0, atol=1e-3)
        np.testing.assert_allclose(rgb[inside], 200.0, atol=1e-3)


def test_eval_resize_keeps_depth_values_and_normalises_exactly():
    src = coded_sample()
    out = EvalTransform()(src)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, H, W)
    expected = (torch.from_numpy(src["image"]).permute(2, 0, 1) / 255.0 - torch.tensor(IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out["image"], expected)
    assert out["seg"].dtype == torch.int64 and out["depth"].dtype == torch.float32
    np.testing.assert_array_equal(out["seg"].numpy(), src["seg"])
    np.testing.assert_array_equal(out["depth"].numpy(), src["depth"])
    half = EvalTransform(size=(H // 2, W // 2))(src)
    assert half["image"].shape == (3, H // 2, W // 2)
    # exact nearest neighbour: output pixel i takes source pixel 2 i + 1, in seg and depth alike
    np.testing.assert_array_equal(half["depth"].numpy(), src["depth"][1::2, 1::2])
    np.testing.assert_array_equal(half["seg"].numpy(), src["seg"][1::2, 1::2])
    double = EvalTransform(size=(2 * H, 2 * W))(src)
    np.testing.assert_array_equal(double["depth"].numpy(), np.kron(src["depth"], np.ones((2, 2), np.float32)))


def test_colour_jitter_touches_only_the_image():
    src = coded_sample()
    torch.manual_seed(3)
    plain = TrainTransform(size=(16, 32), color_jitter=False)(src)
    torch.manual_seed(3)
    jittered = TrainTransform(size=(16, 32), color_jitter=(0.5, 0.5, 0.5, 0.1))(src)
    torch.testing.assert_close(plain["seg"], jittered["seg"])
    torch.testing.assert_close(plain["depth"], jittered["depth"])
    assert not torch.allclose(plain["image"], jittered["image"])


def test_same_seed_same_sample():
    src = coded_sample()
    t = TrainTransform(size=(16, 32))
    torch.manual_seed(7)
    a = t(src)
    torch.manual_seed(7)
    b = t(src)
    for key in ("image", "seg", "depth"):
        torch.testing.assert_close(a[key], b[key])


def test_bad_samples_name_the_file():
    src = coded_sample()
    src["seg"] = src["seg"][:-1]
    with pytest.raises(ValueError, match="lab.png") as err:
        EvalTransform()(src)
    assert "31x64" in str(err.value)
    src = coded_sample()
    src["depth"] = src["depth"][:, :-2]
    with pytest.raises(ValueError, match="disp.png"):
        TrainTransform(size=(16, 32))(src)
    src = coded_sample()
    src["seg"][5, 5] = 40
    with pytest.raises(ValueError, match=r"\[40\]"):
        EvalTransform()(src)
    with pytest.raises(ValueError, match="size"):
        TrainTransform(size=(0, 32))
    with pytest.raises(ValueError, match="scale"):
        TrainTransform(size=(16, 32), scale=(1.0, 0.5))


def test_nan_depth_becomes_invalid_and_the_sample_stays_usable():
    src = coded_sample()
    src["depth"][3, 3] = np.nan
    src["depth"][4, 4] = np.inf
    src["depth"][5, 5] = -2.0
    out = EvalTransform()(src)
    d = out["depth"].numpy()
    assert np.isfinite(d).all() and d[3, 3] == 0 and d[4, 4] == 0 and d[5, 5] == 0 and d[6, 6] == src["depth"][6, 6]


def test_default_collate_on_the_dataset(hand_tree):
    ds = CityscapesDataset(hand_tree.root, "train", transform=TrainTransform(size=(4, 6)), load_right=True)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 4, 6) and batch["image"].dtype == torch.float32
    assert batch["seg"].shape == (3, 4, 6) and batch["seg"].dtype == torch.int64
    assert batch["depth"].shape == (3, 4, 6) and batch["depth"].dtype == torch.float32
    assert batch["name"] == [f.name for f in ds.frames]
    # seg values are train ids or ignore, depth values come from the disparity maps
    assert set(batch["seg"].unique().tolist()) <= set(range(19)) | {255}
    assert (batch["depth"] >= 0).all()
    ds_eval = CityscapesDataset(hand_tree.root, "train", transform=EvalTransform())
    sample = ds_eval[0]
    raw = CityscapesDataset(hand_tree.root, "train")[0]
    np.testing.assert_array_equal(sample["seg"].numpy(), raw["seg"])
    np.testing.assert_array_equal(sample["depth"].numpy(), raw["depth"])


def test_zoom_depth_divides_depth_by_the_crop_magnification():
    src = coded_sample()
    # a box of a quarter of the area (16 x 32) enlarged to the full 32 x 64 output: magnified 2x
    plain = TrainTransform(size=(H, W), scale=(0.25, 0.25), color_jitter=False, hflip=0.0)
    zoomed = TrainTransform(size=(H, W), scale=(0.25, 0.25), color_jitter=False, hflip=0.0, zoom_depth=True)
    torch.manual_seed(3)
    a = plain(src)
    torch.manual_seed(3)
    b = zoomed(src)
    np.testing.assert_array_equal(a["seg"].numpy(), b["seg"].numpy())
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    da, db = a["depth"].numpy(), b["depth"].numpy()
    np.testing.assert_array_equal(da == 0, db == 0)  # invalid stays invalid
    valid = da > 0
    assert valid.mean() > 0.5
    np.testing.assert_allclose(db[valid], da[valid] / 2.0, rtol=1e-6)
    # the whole frame (magnification 1) keeps its depth
    whole = TrainTransform(size=(H, W), scale=(1.0, 1.0), color_jitter=False, hflip=0.0, zoom_depth=True)(src)
    np.testing.assert_array_equal(whole["depth"].numpy(), src["depth"])


def test_zoom_depth_is_relative_to_the_evaluation_scale():
    src = coded_sample()  # 32 x 64
    # native-resolution crops (16 x 32 out of 32 x 64, no resize) evaluated at native size: z = 1
    native = TrainTransform(size=(16, 32), scale=(0.25, 0.25), color_jitter=False, hflip=0.0, zoom_depth=True)
    out = native(src)
    rgb = denormalize(out["image"])
    xs, ys = np.rint(rgb[..., 0] / 4).astype(int), np.rint(rgb[..., 1] / 8).astype(int)
    np.testing.assert_array_equal(out["depth"].numpy(), src["depth"][ys, xs])
    # the same crops when evaluation shrinks the whole frame to width 32: magnified 2x
    torch.manual_seed(5)
    a = native(src)
    torch.manual_seed(5)
    b = TrainTransform(size=(16, 32), scale=(0.25, 0.25), color_jitter=False, hflip=0.0, zoom_depth=True,
                       reference_width=32)(src)
    valid = a["depth"].numpy() > 0
    np.testing.assert_allclose(b["depth"].numpy()[valid], a["depth"].numpy()[valid] / 2.0, rtol=1e-6)


def _normals_of(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A unit normal per pixel that encodes (x, y): tilted right by x, down by y."""
    n = np.stack([0.01 * (x + 1), 0.02 * (y + 1), -np.ones_like(x, dtype=np.float64)], axis=-1)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def test_normals_move_with_the_image_and_a_flip_negates_their_x():
    src = coded_sample()
    y, x = np.mgrid[0:H, 0:W]
    src["normals"] = _normals_of(x, y)
    src["normals"][:, 5] = 0.0  # a column without a label
    t = TrainTransform(size=(16, 32), scale=(0.25, 0.25), color_jitter=False, hflip=0.5)
    flips = 0
    for _ in range(20):
        out = t(src)
        assert out["normals"].shape == (3, 16, 32) and out["normals"].dtype == torch.float32
        rgb = denormalize(out["image"])
        xs, ys = np.rint(rgb[..., 0] / 4).astype(int), np.rint(rgb[..., 1] / 8).astype(int)
        flipped = np.diff(xs, axis=1)[0, 0] == -1
        flips += int(flipped)
        expected = src["normals"][ys, xs].copy()
        if flipped:
            expected[..., 0] *= -1  # the mirrored surface faces the mirrored way
        np.testing.assert_array_equal(out["normals"].permute(1, 2, 0).numpy(), expected)
    assert 0 < flips < 20


def test_normals_resize_nearest_pad_zero_and_eval_keeps_them():
    src = coded_sample()
    y, x = np.mgrid[0:H, 0:W]
    src["normals"] = _normals_of(x, y)
    out = EvalTransform(size=(16, 32))(src)
    got = out["normals"].permute(1, 2, 0).numpy()
    # nearest-exact: every output vector is one of the input's, unchanged (no blend shortens it)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(got, src["normals"][1::2, 1::2])
    src["seg"][0] = 0  # every source pixel labelled: 255 below marks the padding alone
    zoom_out = TrainTransform(size=(32, 64), scale=(3.0, 3.0), color_jitter=False, hflip=0.0)(src)
    n = zoom_out["normals"]
    outside = zoom_out["seg"] == IGNORE_INDEX
    assert outside.any() and (n[:, outside] == 0).all() and (n[:, ~outside].norm(dim=0) > 0.99).all()


def test_bad_normals_name_the_file():
    src = coded_sample()
    src["paths"]["normals"] = "normals/frame.png"
    src["normals"] = np.zeros((H, W, 2), np.float32)
    with pytest.raises(ValueError, match=r"normals/frame.png: normals are 32x64x2 but the image img.png is 32x64"):
        EvalTransform()(src)
    src["normals"] = np.full((H, W, 3), np.nan, np.float32)
    assert not EvalTransform()(src)["normals"].any()  # non-finite: no label


def test_predictor_input_equals_the_evaluation_transform_bit_for_bit():
    """normalize_images (NumPy on the CPU) gives exactly the tensor of torchvision's
    to_dtype + normalize that training and evaluation use, with and without a resize."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from mtdense.data.image import normalize_images

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (H + 5, W - 3, 3), dtype=np.uint8) for _ in range(2)]
    sample = coded_sample()
    expected = EvalTransform()(sample)["image"]
    assert torch.equal(normalize_images([sample["image"]]), expected[None])
    for size in (None, (H, W)):
        batch = tv_tensors.Image(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2))
        if size is not None:
            batch = v2.functional.resize(batch, list(size), antialias=True)
        reference = v2.functional.normalize(v2.functional.to_dtype(batch, torch.float32, scale=True),
                                            IMAGENET_MEAN, IMAGENET_STD).as_subclass(torch.Tensor)
        got = normalize_images(images, size)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, reference)
