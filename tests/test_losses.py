"""Losses: hand computations, masks respected, no NaN on empty batches, task weightings."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtdense.losses import (
    DynamicWeightAverage,
    FixedWeighting,
    MultiTaskLoss,
    UncertaintyWeighting,
    depth_loss,
    segmentation_loss,
)


def _encode(d: torch.Tensor) -> torch.Tensor:
    # The documented target encoding: log(clip(depth_m, ., 250)) / 5.
    return torch.log(d.clamp(max=250.0)) / 5.0


@pytest.fixture
def seg_batch():
    logits = torch.randn(2, 19, 8, 16, requires_grad=True)
    target = torch.randint(0, 19, (2, 8, 16))
    target[:, :3] = 255
    return logits, target


@pytest.fixture
def depth_batch():
    pred = torch.randn(2, 1, 8, 16, requires_grad=True)
    depth = torch.rand(2, 8, 16) * 100 + 1.0
    depth[0, :, :5] = 0.0  # invalid (no disparity)
    depth[1, 4:] = 0.0
    return pred, depth


def test_segmentation_loss_equals_hand_cross_entropy(seg_batch):
    logits, target = seg_batch
    lp = logits.detach().permute(0, 2, 3, 1).reshape(-1, 19).double().log_softmax(1).numpy()
    t = target.reshape(-1).numpy()
    keep = t != 255
    expected = -lp[keep, t[keep]].mean()
    assert segmentation_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_segmentation_loss_ignores_ignore_pixels(seg_batch):
    logits, target = seg_batch
    base = segmentation_loss(logits, target)
    base.backward()
    ignored = (target == 255)[:, None].expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    changed = logits.detach().clone()
    changed[ignored] = torch.randn(int(ignored.sum())) * 100
    assert segmentation_loss(changed, target).item() == pytest.approx(base.item(), rel=1e-6)


def test_segmentation_loss_all_ignored_is_zero_with_graph():
    logits = torch.randn(1, 19, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), 255))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_segmentation_loss_rejects_label_ids():
    with pytest.raises(ValueError, match="outside 0..18"):
        segmentation_loss(torch.randn(1, 19, 4, 4), torch.full((1, 4, 4), 26))


def test_depth_mse_equals_hand_computation_on_valid_pixels(depth_batch):
    pred, depth = depth_batch
    valid = depth > 0
    expected = ((pred.detach()[:, 0][valid] - _encode(depth[valid])) ** 2).mean()
    assert depth_loss(pred, depth, "mse").item() == pytest.approx(expected.item(), rel=1e-5)


def test_depth_l1_and_berhu_equal_hand_computation(depth_batch):
    pred, depth = depth_batch
    valid = depth > 0
    err = (pred.detach()[:, 0][valid] - _encode(depth[valid])).double().numpy()
    assert depth_loss(pred, depth, "l1").item() == pytest.approx(np.abs(err).mean(), rel=1e-5)
    c = 0.2 * np.abs(err).max()
    berhu = np.where(np.abs(err) <= c, np.abs(err), (err**2 + c**2) / (2 * c)).mean()
    assert depth_loss(pred, depth, "berhu").item() == pytest.approx(berhu, rel=1e-5)


def test_depth_silog_per_image_hand_computation_and_scale_invariance(depth_batch):
    pred, depth = depth_batch
    lam = 0.5
    per_image = []
    for b in range(2):
        v = depth[b] > 0
        e = (pred.detach()[b, 0][v] - _encode(depth[b][v])).double()
        per_image.append((e**2).mean() - lam * e.mean() ** 2)
    assert depth_loss(pred, depth, "silog").item() == pytest.approx(float(sum(per_image) / 2), rel=1e-5)
    # lambda = 1: scaling every depth (adding a constant in log space) changes nothing.
    a = depth_loss(pred, depth, "silog", silog_lambda=1.0)
    b = depth_loss(pred + 0.3, depth, "silog", silog_lambda=1.0)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


@pytest.mark.parametrize("kind", ["mse", "l1", "berhu", "silog"])
def test_depth_loss_ignores_invalid_pixels(depth_batch, kind):
    pred, depth = depth_batch
    base = depth_loss(pred, depth, kind)
    base.backward()
    invalid = (depth == 0)[:, None]
    assert torch.all(pred.grad[invalid] == 0)
    changed = pred.detach().clone()
    changed[invalid] = torch.randn(int(invalid.sum())) * 1e3
    assert depth_loss(changed, depth, kind).item() == pytest.approx(base.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["mse", "l1", "berhu", "silog"])
def test_depth_loss_without_valid_pixel_is_zero_with_graph(kind):
    pred = torch.randn(2, 1, 4, 4, requires_grad=True)
    loss = depth_loss(pred, torch.zeros(2, 4, 4), kind)
    assert loss.item() == 0.0 and not math.isnan(loss.item()) and loss.requires_grad
    loss.backward()
    assert torch.isfinite(pred.grad).all() and torch.all(pred.grad == 0)


def test_multitask_loss_fixed_weights_sum_in_one_place(seg_batch, depth_batch):
    logits, seg = seg_batch
    pred, depth = depth_batch
    crit = MultiTaskLoss(weights={"seg": 2.0, "depth": 0.5})
    out = crit({"seg": logits, "depth": pred}, {"seg": seg, "depth": depth})
    assert set(out) == {"loss_seg", "loss_depth", "loss"}
    assert out["loss_seg"].item() == pytest.approx(2.0 * segmentation_loss(logits, seg).item(), rel=1e-6)
    assert out["loss_depth"].item() == pytest.approx(0.5 * depth_loss(pred, depth).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["loss_seg"].item() + out["loss_depth"].item(), rel=1e-6)
    # Default: the recipe's unweighted sum.
    default = MultiTaskLoss()({"seg": logits, "depth": pred}, {"seg": seg, "depth": depth})
    assert default["loss"].item() == pytest.approx(segmentation_loss(logits, seg).item() + depth_loss(pred, depth).item(), rel=1e-6)


def test_multitask_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="depth loss"):
        MultiTaskLoss(depth_loss="huber")
    with pytest.raises(ValueError, match="weighting"):
        MultiTaskLoss(weighting="gradnorm")
    with pytest.raises(ValueError, match=r"no loss for tasks \['edges'\]"):
        MultiTaskLoss(tasks=("seg", "edges"))


def test_from_config_matches_the_keyword_constructor():
    from mtdense.train.schema import LossConfig

    cfg = LossConfig(depth="berhu", weighting="dwa", dwa_temperature=4.0, class_weights=[1.0, 2.0])
    loss = MultiTaskLoss.from_config(cfg, tasks=["seg", "depth"])
    assert (loss.depth_loss, type(loss.weighting), loss.weighting.temperature) == ("berhu", DynamicWeightAverage, 4.0)
    assert loss.class_weights.tolist() == [1.0, 2.0]
    # The loss used on its own defaults to the recipe's loss.
    plain, recipe = MultiTaskLoss(), MultiTaskLoss.from_config(LossConfig(), tasks=("seg", "depth"))
    assert (plain.depth_loss, plain.weighting.weights(), plain.class_weights) == (
        recipe.depth_loss, recipe.weighting.weights(), recipe.class_weights)
    with pytest.raises(ValueError, match="resolved to numbers"):
        MultiTaskLoss.from_config(LossConfig(class_weights="enet"), tasks=["seg"])


def test_uncertainty_weighting_formula_and_gradients():
    w = UncertaintyWeighting(["seg", "depth"])
    with torch.no_grad():
        w.log_vars["seg"].fill_(0.4)
        w.log_vars["depth"].fill_(-0.2)
    raw = {"seg": torch.tensor(1.5), "depth": torch.tensor(0.3)}
    out = w(raw)
    assert out["seg"].item() == pytest.approx(math.exp(-0.4) * 1.5 + 0.2, rel=1e-6)
    assert out["depth"].item() == pytest.approx(0.5 * math.exp(0.2) * 0.3 - 0.1, rel=1e-6)
    sum(out.values()).backward()
    assert all(isinstance(p, torch.nn.Parameter) and p.grad is not None for p in w.log_vars.values())


def test_dynamic_weight_average_per_epoch_ratios():
    dwa = DynamicWeightAverage(["seg", "depth"], temperature=2.0)
    epochs = [(2.0, 1.0), (1.0, 0.9)]  # mean losses of two epochs
    for seg_l, depth_l in epochs:
        assert dwa.weights() == {"seg": 1.0, "depth": 1.0}
        for _ in range(3):
            dwa.observe({"seg": torch.tensor(seg_l), "depth": torch.tensor(depth_l)})
        dwa.end_epoch()
    r = np.array([1.0 / 2.0, 0.9 / 1.0]) / 2.0
    expected = 2 * np.exp(r) / np.exp(r).sum()
    got = dwa.weights()
    assert got["seg"] == pytest.approx(expected[0], rel=1e-5) and got["depth"] == pytest.approx(expected[1], rel=1e-5)
    out = dwa({"seg": torch.tensor(1.0), "depth": torch.tensor(1.0)})
    assert out["seg"].item() == pytest.approx(expected[0], rel=1e-5)
    # The state survives a checkpoint round trip.
    other = DynamicWeightAverage(["seg", "depth"])
    other.load_state_dict(dwa.state_dict())
    assert other.weights() == pytest.approx(got)


def test_fixed_weighting_rejects_negative_or_unknown():
    with pytest.raises(ValueError, match="depth"):
        FixedWeighting(["seg", "depth"], {"depth": -1.0})
    with pytest.raises(ValueError, match="normals"):
        FixedWeighting(["seg", "depth"], {"normals": 1.0})


def test_loss_is_cross_entropy_with_ignore_index(seg_batch):
    logits, target = seg_batch
    assert segmentation_loss(logits, target).item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item())


def test_enet_class_weights_and_weighted_cross_entropy(seg_batch):
    from mtdense.losses import enet_class_weights

    counts = [600, 300, 100, 0]
    w = enet_class_weights(counts)
    expected = [1 / math.log(1.02 + c / 1000) for c in counts]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert w[2] > w[1] > w[0]  # rarer, heavier
    logits, target = seg_batch
    c = logits.shape[1]
    weights = torch.linspace(0.5, 3.0, c)
    loss = MultiTaskLoss(tasks=["seg"], class_weights=weights.tolist())
    got = loss.task_losses({"seg": logits}, {"seg": target})["seg"]
    # by hand: sum over labelled pixels of w[y] * -log softmax[y], over the sum of w[y]
    logp = F.log_softmax(logits, 1)
    lab = target != 255
    y = target.clamp(max=c - 1)
    nll = -logp.gather(1, y[:, None])[:, 0]
    wy = weights[y]
    np.testing.assert_allclose(float(got), float((wy * nll)[lab].sum() / wy[lab].sum()), rtol=1e-5)
    with pytest.raises(ValueError, match="class weights for"):
        MultiTaskLoss(tasks=["seg"], class_weights=[1.0, 2.0]).task_losses({"seg": logits}, {"seg": target})
    with pytest.raises(ValueError, match="resolved"):
        MultiTaskLoss(tasks=["seg"], class_weights="enet")
    with pytest.raises(ValueError, match="non-negative"):
        enet_class_weights([-1, 2])


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "dwa"])
def test_a_frame_without_labels_adds_nothing(weighting):
    """A frame whose seg is all 255 and depth all 0 (no label): 0 loss alone, not NaN; beside a
    labelled frame the loss is that frame's alone."""
    from mtdense.losses import MultiTaskLoss

    torch.manual_seed(0)
    loss = MultiTaskLoss(tasks=["seg", "depth"], weighting=weighting)
    outputs = {"seg": torch.randn(2, 5, 8, 8, requires_grad=True), "depth": torch.randn(2, 1, 8, 8, requires_grad=True)}
    targets = {"seg": torch.randint(0, 5, (2, 8, 8)), "depth": torch.rand(2, 8, 8) * 10 + 1}
    targets["seg"][1] = 255
    targets["depth"][1] = 0
    none = loss({k: v[1:] for k, v in outputs.items()}, {k: v[1:] for k, v in targets.items()})
    assert all(float(v) == 0.0 and not math.isnan(float(v)) for v in none.values())
    none["loss"].backward()
    assert all(torch.isfinite(o.grad).all() and not o.grad.any() for o in outputs.values())
    both = loss.task_losses(outputs, targets)
    alone = loss.task_losses({k: v[:1] for k, v in outputs.items()}, {k: v[:1] for k, v in targets.items()})
    for task in ("seg", "depth"):
        torch.testing.assert_close(both[task], alone[task])


@pytest.fixture
def normals_batch():
    g = torch.Generator().manual_seed(3)
    pred = F.normalize(torch.randn(2, 3, 6, 8, generator=g), dim=1).requires_grad_(True)
    target = F.normalize(torch.randn(2, 3, 6, 8, generator=g), dim=1)
    target[0, :, :, :3] = 0.0  # no label
    target[1, :, 4:] = 0.0
    return pred, target


def test_normals_cosine_and_l1_equal_hand_computation(normals_batch):
    from mtdense.losses import normals_loss

    pred, target = normals_batch
    p = pred.detach().permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(np.float64)
    t = target.permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(np.float64)
    valid = np.abs(t).sum(1) > 0
    assert 0 < valid.sum() < len(valid)
    cos = (p[valid] * t[valid]).sum(1) / np.linalg.norm(p[valid], axis=1) / np.linalg.norm(t[valid], axis=1)
    assert normals_loss(pred, target, "cosine").item() == pytest.approx(float(np.mean(1 - cos)), rel=1e-5)
    l1 = np.abs(p[valid] - t[valid]).sum(1).mean()
    assert normals_loss(pred, target, "l1").item() == pytest.approx(float(l1), rel=1e-5)
    # equal directions cost nothing, opposite ones 2 (cosine); the prediction's length does not count
    assert normals_loss(3 * target + 0.0, target, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert normals_loss(-target, target, "cosine").item() == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "l1"])
def test_normals_loss_ignores_unlabelled_pixels_and_empty_is_zero(normals_batch, kind):
    from mtdense.losses import normals_loss

    pred, target = normals_batch
    changed = pred.detach().clone()
    changed[0, :, :, :3] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]  # only where there is no label
    changed[1, :, 4:] = -1.0
    assert normals_loss(changed, target, kind).item() == pytest.approx(normals_loss(pred, target, kind).item(), rel=1e-6)
    none = normals_loss(pred, torch.zeros_like(target), kind)
    assert none.item() == 0.0
    none.backward()
    assert pred.grad is not None and not pred.grad.any()


def test_normals_loss_rejects_bad_kind_and_shapes(normals_batch):
    from mtdense.losses import normals_loss

    pred, target = normals_batch
    with pytest.raises(ValueError, match="unknown kind 'angle'; valid: cosine, l1"):
        normals_loss(pred, target, "angle")
    with pytest.raises(ValueError, match=r"must both be B x 3 x H x W; got \(2, 3, 6, 8\) and \(2, 6, 8, 3\)"):
        normals_loss(pred, target.permute(0, 2, 3, 1), "cosine")
    with pytest.raises(ValueError, match="unknown normals loss 'l2'"):
        MultiTaskLoss(tasks=["normals"], normals_loss="l2")


def test_uncertainty_weighting_treats_normals_as_regression():
    w = UncertaintyWeighting(["seg", "depth", "normals"])
    with torch.no_grad():
        w.log_vars["normals"].fill_(0.6)
    out = w({"seg": torch.tensor(1.0), "depth": torch.tensor(1.0), "normals": torch.tensor(0.8)})
    assert out["normals"].item() == pytest.approx(0.5 * math.exp(-0.6) * 0.8 + 0.3, rel=1e-6)


def test_dynamic_weight_average_over_three_tasks():
    dwa = DynamicWeightAverage(["seg", "depth", "normals"], temperature=2.0)
    for losses in [(2.0, 1.0, 0.5), (1.0, 0.9, 0.5)]:
        dwa.observe({t: torch.tensor(v) for t, v in zip(["seg", "depth", "normals"], losses)})
        dwa.end_epoch()
    r = np.array([1.0 / 2.0, 0.9 / 1.0, 0.5 / 0.5]) / 2.0
    expected = 3 * np.exp(r) / np.exp(r).sum()
    assert list(dwa.weights().values()) == pytest.approx(expected.tolist(), rel=1e-5)


def test_a_frame_without_normals_trains_the_other_tasks():
    """A frame without a normals label (all zero) adds nothing to the normals loss: the batch's
    normals loss is that of the labelled frame alone."""
    loss = MultiTaskLoss(tasks=["seg", "normals"])
    outputs = {"seg": torch.randn(2, 5, 8, 8), "normals": F.normalize(torch.randn(2, 3, 8, 8), dim=1)}
    targets = {"seg": torch.randint(0, 5, (2, 8, 8)), "normals": F.normalize(torch.randn(2, 3, 8, 8), dim=1)}
    targets["normals"][1] = 0.0
    both = loss.task_losses(outputs, targets)
    alone = loss.task_losses({k: v[:1] for k, v in outputs.items()}, {k: v[:1] for k, v in targets.items()})
    torch.testing.assert_close(both["normals"], alone["normals"])
    assert both["seg"].item() > 0
