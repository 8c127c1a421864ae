"""Depth encodings: the Cityscapes disparity PNG, disparity <-> depth, the network target, cleaning."""

import numpy as np
import pytest
import torch

from mtdense.data.depth import (
    MAX_DEPTH_M, clean_disparity, decode_cityscapes_disparity, decode_depth, depth_to_disparity, disparity_to_depth,
    encode_cityscapes_disparity, encode_depth, valid_depth_mask,
)


def test_cityscapes_disparity_encoding():
    png = np.array([[0, 1, 2, 257, 65535]], np.uint16)
    np.testing.assert_array_equal(decode_cityscapes_disparity(png), [[0.0, 0.0, 1 / 256, 1.0, 65534 / 256]])
    d = np.random.default_rng(0).uniform(0.01, 250.0, (50, 60)).astype(np.float32)
    d[::7, ::5] = 0
    d[3, 3], d[4, 4], d[5, 5] = np.nan, -1.0, 300.0
    p = encode_cityscapes_disparity(d)
    assert p.dtype == np.uint16 and p[3, 3] == 0 and p[4, 4] == 0 and p[5, 5] == 65535
    back = decode_cityscapes_disparity(p)
    ok = np.isfinite(d) & (d > 0) & (d < 255)
    assert np.abs(back[ok] - d[ok]).max() <= 1 / 512 + 1e-6
    assert (back[d == 0] == 0).all()
    with pytest.raises(ValueError, match="uint16"):
        decode_cityscapes_disparity(p.astype(np.uint8))


def test_disparity_depth_round_trip():
    d = np.array([[0.0, 0.5, 2.0, np.nan, -3.0]], np.float32)
    z = disparity_to_depth(d, baseline=0.209313, fx=2262.52)
    expected = 0.209313 * 2262.52
    np.testing.assert_allclose(z, [[0.0, expected / 0.5, expected / 2.0, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(depth_to_disparity(z, 0.209313, 2262.52), [[0.0, 0.5, 2.0, 0.0, 0.0]], rtol=1e-6)
    for b, fx in ((0.0, 100.0), (0.2, -1.0), (float("nan"), 100.0)):
        with pytest.raises(ValueError, match="baseline"):
            disparity_to_depth(d, b, fx)


def test_depth_target_encoding_is_inverted_exactly_below_the_cap():
    z = np.array([0.5, 1.0, 4.0, 30.0, 249.0], np.float32)
    y = encode_depth(z)
    np.testing.assert_allclose(y, np.log(z) / 5, rtol=1e-6)
    np.testing.assert_allclose(decode_depth(y), z, rtol=1e-5)
    assert encode_depth(np.array([1000.0], np.float32))[0] == pytest.approx(np.log(MAX_DEPTH_M) / 5)
    zt = torch.from_numpy(z)
    torch.testing.assert_close(encode_depth(zt), torch.from_numpy(y))
    torch.testing.assert_close(decode_depth(encode_depth(zt)), zt, rtol=1e-5, atol=0)


def test_valid_depth_mask_numpy_and_torch():
    z = np.array([0.0, 1.0, np.nan, np.inf, -2.0, 80.0], np.float32)
    expected = [False, True, False, False, False, True]
    assert valid_depth_mask(z).tolist() == expected
    assert valid_depth_mask(torch.from_numpy(z)).tolist() == expected


def test_clean_disparity_fills_holes_and_keeps_the_size():
    h, w = 60, 100
    rows = np.arange(h, dtype=np.float32)[:, None].repeat(w, 1)
    d = 1.0 + rows / 4  # a ground plane
    noisy = d.copy()
    rng = np.random.default_rng(0)
    noisy[rng.random((h, w)) < 0.2] = 0  # holes
    noisy[int(0.85 * h):] = 0  # ego vehicle: nothing
    out = clean_disparity(noisy)
    assert out.shape == (h, w) and out.dtype == np.float32
    assert (out > 0).all()
    # holes are filled with what their neighbours say: close to the cleaning of the hole-free map
    # (the ramp rises 0.25 px a row; the median counts holes as 0, which shifts it by a row or so)
    ideal = clean_disparity(np.where(rows < int(0.85 * h), d, 0).astype(np.float32))
    err = np.abs(out - ideal)
    assert np.median(err) <= 0.25 and (err <= 0.5).mean() > 0.99
    with pytest.raises(ValueError, match="bottom"):
        clean_disparity(noisy, bottom=0.6)
    with pytest.raises(ValueError, match="median"):
        clean_disparity(noisy, median=7)
    with pytest.raises(ValueError, match="H x W"):
        clean_disparity(np.zeros((2, 3, 4)))
