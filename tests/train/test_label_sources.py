"""Training from mixed label sources: per-frame loss weights computed by hand, the recipe keys and
their errors, the training batches' sources and weights, validation on real labels only."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtdense.data.depth import encode_depth
from mtdense.losses import MultiTaskLoss, depth_loss, normals_loss, segmentation_loss
from mtdense.train.datamodule import CityscapesDataModule
from mtdense.train.module import MultiTaskModule
from mtdense.train.schema import DataConfig, RecipeError, StageConfig, recipe_from_dict

W8 = torch.tensor([1.0, 0.25])  # frame 0 a real label, frame 1 a teacher's at weight 0.25


def _seg_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, 0] = 255
    target[1, :, :2] = 255
    return logits, target


@pytest.mark.parametrize("class_weights", [None, torch.tensor([1.0, 3.0, 0.5, 2.0])])
def test_segmentation_weights_scale_each_frame_by_hand(class_weights):
    logits, target = _seg_case()
    labelled = target != 255
    nll = -F.log_softmax(logits, 1).gather(1, target.clamp(max=3)[:, None])[:, 0]
    cw = torch.ones(4) if class_weights is None else class_weights
    per_class = cw[target.clamp(max=3)]
    expected = (W8[:, None, None] * per_class * nll)[labelled].sum() / per_class[labelled].sum()
    got = segmentation_loss(logits, target, class_weights=class_weights, sample_weight=W8)
    torch.testing.assert_close(got, expected)
    # all ones: the unweighted loss
    torch.testing.assert_close(segmentation_loss(logits, target, class_weights=class_weights, sample_weight=torch.ones(2)),
                               segmentation_loss(logits, target, class_weights=class_weights))


def _depth_case(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, 1, 5, 6, generator=g) * 0.3 + 0.6
    depth = torch.rand(2, 5, 6, generator=g) * 38 + 2
    depth[0, :2] = 0.0
    depth[1, :, 4:] = 0.0
    return pred, depth


@pytest.mark.parametrize("kind", ["mse", "l1", "berhu", "silog"])
def test_depth_weights_scale_each_frame_by_hand(kind):
    pred, depth = _depth_case()
    valid = depth > 0
    err = (pred[:, 0] - encode_depth(depth.clamp_min(1e-3)))
    w = W8[:, None, None].expand_as(depth)
    if kind == "silog":
        per_image = torch.stack([err[b][valid[b]].pow(2).mean() - 0.5 * err[b][valid[b]].mean() ** 2 for b in range(2)])
        expected = (W8 * per_image).sum() / 2
    else:
        e = err[valid]
        if kind == "mse":
            per_pixel = e.pow(2)
        elif kind == "l1":
            per_pixel = e.abs()
        else:
            c = 0.2 * e.abs().max()
            per_pixel = torch.where(e.abs() <= c, e.abs(), (e.pow(2) + c * c) / (2 * c))
        expected = (w[valid] * per_pixel).sum() / valid.sum()
    torch.testing.assert_close(depth_loss(pred, depth, kind, sample_weight=W8), expected)
    torch.testing.assert_close(depth_loss(pred, depth, kind, sample_weight=torch.ones(2)), depth_loss(pred, depth, kind))


@pytest.mark.parametrize("kind", ["cosine", "l1"])
def test_normals_weights_scale_each_frame_by_hand(kind):
    g = torch.Generator().manual_seed(2)
    pred = F.normalize(torch.randn(2, 3, 4, 5, generator=g), dim=1)
    target = F.normalize(torch.randn(2, 3, 4, 5, generator=g), dim=1)
    target[1, :, :2] = 0.0
    valid = target.abs().sum(1) > 0
    per_pixel = 1 - (pred * target).sum(1) if kind == "cosine" else (pred - target).abs().sum(1)
    expected = (W8[:, None, None] * per_pixel)[valid].sum() / valid.sum()
    torch.testing.assert_close(normals_loss(pred, target, kind, sample_weight=W8), expected)


def test_a_frame_of_weight_zero_gets_no_gradient_and_bad_weights_are_refused():
    logits, target = _seg_case()
    logits.requires_grad_(True)
    segmentation_loss(logits, target, sample_weight=torch.tensor([1.0, 0.0])).backward()
    assert logits.grad[1].abs().max() == 0 and logits.grad[0].abs().max() > 0
    with pytest.raises(ValueError, match=r"one weight per image \(2\), got shape \(3,\)"):
        segmentation_loss(logits, target, sample_weight=torch.ones(3))
    pred, depth = _depth_case()
    with pytest.raises(ValueError, match=r"depth loss: sample weights must be finite numbers >= 0"):
        depth_loss(pred, depth, sample_weight=torch.tensor([1.0, -0.5]))
    criterion = MultiTaskLoss(tasks=["seg"])
    with pytest.raises(ValueError, match=r"sample weights for tasks \['depth'\] that have no loss here"):
        criterion.task_losses({"seg": logits}, {"seg": target}, {"depth": torch.ones(2)})


def test_multitask_loss_weights_only_the_tasks_named():
    logits, target = _seg_case()
    pred, depth = _depth_case()
    criterion = MultiTaskLoss(tasks=["seg", "depth"])
    outputs, targets = {"seg": logits, "depth": pred}, {"seg": target, "depth": depth}
    plain = criterion.task_losses(outputs, targets)
    weighted = criterion.task_losses(outputs, targets, {"seg": W8})
    torch.testing.assert_close(weighted["seg"], segmentation_loss(logits, target, sample_weight=W8))
    assert weighted["depth"] == plain["depth"] and weighted["seg"] != plain["seg"]


# -- the recipe keys ---------------------------------------------------------------------------
def _recipe(root, data: dict, tasks: dict | None = None) -> dict:
    return {"data": {"format": "folder", "root": str(root), **data},
            "model": {"tasks": tasks or {"seg": 5, "depth": 1}},
            "stages": [{"name": "s", "epochs": 1, "batch_size": 2, "lr": 1e-3, "size": [64, 96]}]}


@pytest.fixture
def mixed(tiny_folder, tmp_path):
    """The 5-class folder dataset with a teacher's masks (all class 1) and depth (all 7 m) for
    every train frame and a teacher's masks (class 2) for the val frames."""
    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    for split, cls in (("train", 1), ("val", 2)):
        for image in sorted((root / "images" / split).glob("*.png")):
            h, w = cv2.imread(str(image)).shape[:2]
            (root / "masks_t" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "masks_t" / split / image.name), np.full((h, w), cls, np.uint8))
            if split == "train":
                (root / "depth_t" / split).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "depth_t" / split / image.name), np.full((h, w), 7 * 256, np.uint16))
    return root


@pytest.mark.parametrize("data, tasks, key, fix", [
    ({"format": "cityscapes", "sources": {"seg": ["masks"]}}, None, "data.sources", "remove data.sources"),
    ({"sources": {"sky": ["masks_t"]}}, None, "data.sources.sky", "give sources for seg, depth, normals"),
    ({"sources": {"normals": ["normals_t"]}}, None, "data.sources.normals", "add the task to model.tasks"),
    ({"sources": {"seg": ["masks", "depth"]}}, None, "data.sources.seg", "depth/ holds the real depth labels"),
    ({"sources": {"seg": ["masks", "masks_x"]}}, None, "data.sources.seg", "write it with 'mtdense data teacher"),
    ({"sources": {"seg": ["masks_t"]}, "teacher_weight": {"depth": 0.5}}, None, "data.teacher_weight.depth",
     "add data.sources.depth"),
    ({"sources": {"seg": ["masks_t"]}, "teacher_weight": {"seg": -0.5}}, None, "data.teacher_weight.seg", ">= 0"),
])
def test_recipe_errors_name_the_key_and_the_fix(mixed, data, tasks, key, fix):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(_recipe(mixed, data, tasks))
    assert str(err.value).startswith(f"{key}:") and fix in str(err.value), err.value


def test_a_good_recipe_keeps_its_sources(mixed):
    recipe = recipe_from_dict(_recipe(mixed, {"sources": {"seg": ["masks", "masks_t"], "depth": ["depth", "depth_t"]},
                                              "teacher_weight": {"seg": 0.25}}))
    assert recipe.data.sources == {"seg": ["masks", "masks_t"], "depth": ["depth", "depth_t"]}
    assert recipe.data.teacher_weight == {"seg": 0.25}
    assert DataConfig().sources is None and DataConfig().teacher_weight == {}


# -- batches -----------------------------------------------------------------------------------
def _datamodule(root, **data) -> CityscapesDataModule:
    config = DataConfig(format="folder", root=str(root), num_workers=0, color_jitter=[0.0, 0.0, 0.0, 0.0], **data)
    stage = StageConfig(name="s", epochs=1, batch_size=4, lr=1e-3, size=[64, 96], crop_scale=[1.0, 1.0])
    return CityscapesDataModule.from_config(config, stage, (64, 96), None, num_classes=5, tasks=["seg", "depth"])


def test_training_batches_carry_sources_and_weights_validation_reads_real_labels(mixed):
    dm = _datamodule(mixed, sources={"seg": ["masks", "masks_t"], "depth": ["depth", "depth_t"]},
                     teacher_weight={"seg": 0.25})
    batch = next(iter(dm.train_dataloader()))
    names, seg_from, depth_from = batch["name"], batch["sources"]["seg"], batch["sources"]["depth"]
    assert sorted(names) == ["frame000", "frame001", "frame002", "frame003"]
    for i, name in enumerate(names):
        teacher = name == "frame000"  # the frame without real labels
        assert (seg_from[i], depth_from[i]) == (("masks_t", "depth_t") if teacher else ("masks", "depth"))
        assert batch["label_weight"]["seg"][i].item() == (0.25 if teacher else 1.0)
        labelled = batch["seg"][i] != 255
        assert labelled.any() and ((batch["seg"][i][labelled] == 1).all() if teacher else True)
        if teacher:
            assert torch.allclose(batch["depth"][i][batch["depth"][i] > 0], torch.tensor(7.0))
    assert set(batch["label_weight"]) == {"seg"}  # no weight given for depth: unweighted
    val = next(iter(dm.val_dataloader()))
    assert "sources" not in val and "label_weight" not in val
    for i, name in enumerate(val["name"]):
        real = cv2.imread(str(mixed / "masks" / "val" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert torch.equal(val["seg"][i], torch.from_numpy(real).long())  # not the teacher's class 2


def test_without_sources_the_batches_are_as_before(mixed):
    batch = next(iter(_datamodule(mixed).train_dataloader()))
    assert "sources" not in batch and "label_weight" not in batch
    i = batch["name"].index("frame000")
    assert (batch["seg"][i] == 255).all() and not batch["depth"][i].any()  # the teachers are not read


def test_sources_of_a_task_the_model_lacks_are_refused_by_the_datamodule(mixed):
    config = DataConfig(format="folder", root=str(mixed), num_workers=0, sources={"depth": ["depth", "depth_t"]})
    stage = StageConfig(name="s", epochs=1, batch_size=2, lr=1e-3, size=[64, 96])
    with pytest.raises(RecipeError, match=r"^data\.sources\.depth: the model has no depth task .*remove data\.sources\.depth"):
        CityscapesDataModule.from_config(config, stage, (64, 96), None, num_classes=5, tasks=["seg"])


def test_the_module_applies_the_batch_weights(mixed):
    dm = _datamodule(mixed, sources={"seg": ["masks", "masks_t"]}, teacher_weight={"seg": 0.0})
    batch = next(iter(dm.train_dataloader()))
    module = MultiTaskModule({"encoder": "mobilenet_v3_small", "tasks": {"seg": 5, "depth": 1}, "decoder_channels": 16},
                             lr=1e-3).eval()
    with torch.no_grad():
        _, raw, _ = module._losses(batch)
        outputs = module(batch["image"])
    keep = torch.tensor([s != "masks_t" for s in batch["sources"]["seg"]], dtype=torch.float32)
    torch.testing.assert_close(raw["seg"], segmentation_loss(outputs["seg"], batch["seg"], sample_weight=keep))
    plain = {k: v for k, v in batch.items() if k != "label_weight"}
    with torch.no_grad():
        _, unweighted, _ = module._losses(plain)
    torch.testing.assert_close(unweighted["seg"], segmentation_loss(outputs["seg"], batch["seg"]))
    assert raw["seg"] < unweighted["seg"] and raw["depth"] == unweighted["depth"]
