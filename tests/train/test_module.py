"""The LightningModule: losses go down, metrics are logged, checkpoints rebuild the model."""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mtdense import load_model
from mtdense.train.module import MultiTaskModule
from mtdense.train.schema import LossConfig, OptimizerConfig, recipe_from_dict

MODEL = {"encoder": "mobilenet_v3_small", "tasks": {"seg": 19, "depth": 1}, "decoder_channels": 16}


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 4, (2, 64, 128), generator=g)
    seg[:, :8] = 255
    depth = torch.rand(2, 64, 128, generator=g) * 40 + 2
    depth[:, :, :10] = 0.0
    # The image carries the labels, so the task is learnable.
    image = torch.randn(2, 3, 64, 128, generator=g) * 0.1 + seg.clamp(max=3)[:, None].float() / 3
    return {"image": image, "seg": seg, "depth": depth, "name": ["a", "b"]}


def _trainer(tmp_path, steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )


def _raw_losses(module: MultiTaskModule, batch: dict) -> dict:
    with torch.no_grad():
        return {k: v.item() for k, v in module.criterion.task_losses(module(batch["image"]), batch).items()}


def test_short_run_on_one_batch_lowers_both_task_losses(tmp_path):
    batch = _batch()
    module = MultiTaskModule(MODEL, lr=5e-3, optimizer_config={"pct_start": 0.1})
    before = _raw_losses(module, batch)
    _trainer(tmp_path, 25).fit(module, DataLoader([batch] * 25, batch_size=None))
    after = _raw_losses(module, batch)
    assert after["seg"] < 0.7 * before["seg"], (before, after)
    assert after["depth"] < 0.7 * before["depth"], (before, after)


def test_one_cycle_schedule_steps_every_batch(tmp_path):
    module = MultiTaskModule(MODEL, lr=1e-3)
    trainer = _trainer(tmp_path, 6)
    trainer.fit(module, DataLoader([_batch()] * 6, batch_size=None))
    sched = trainer.lr_scheduler_configs[0]
    assert isinstance(sched.scheduler, torch.optim.lr_scheduler.OneCycleLR) and sched.interval == "step"
    assert sched.scheduler.total_steps == 6 and sched.scheduler.last_epoch == 6
    assert isinstance(trainer.optimizers[0], torch.optim.Adam)


def test_validation_logs_split_metrics(tmp_path):
    module = MultiTaskModule(MODEL, lr=1e-3)
    trainer = _trainer(tmp_path, 1)
    trainer.validate(module, DataLoader([_batch(1), _batch(2)], batch_size=None), verbose=False)
    m = trainer.callback_metrics
    for key in ("val/miou", "val/pixel_acc", "val/abs_rel", "val/sq_rel", "val/rmse", "val/rmse_log", "val/delta1",
                "val/loss_seg", "val/loss_depth"):
        assert key in m and torch.isfinite(m[key]), key
    assert 0 <= m["val/miou"] <= 1


def test_learned_weighting_parameters_are_optimised(tmp_path):
    module = MultiTaskModule(MODEL, lr=1e-2, loss_config={"weighting": "uncertainty"})
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, DataLoader([_batch()] * 3, batch_size=None))
    log_vars = module.criterion.weighting.log_vars
    assert any(abs(p.item()) > 0 for p in log_vars.values())
    assert any(p is log_vars["seg"] for group in trainer.optimizers[0].param_groups for p in group["params"])


def test_checkpoint_rebuilds_its_model_with_load_model(tmp_path):
    module = MultiTaskModule(MODEL, lr=1e-3, stage={"index": 0, "name": "s0"})
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, DataLoader([_batch()] * 2, batch_size=None))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # plain-typed hyper-parameters only
    assert ckpt["hyper_parameters"]["model_config"] == {**MODEL, "freeze_encoder": False}
    model = load_model(path)
    x = torch.randn(1, 3, 64, 128)
    module.model.eval()
    with torch.no_grad():
        a, b = module.model(x), model(x)
    torch.testing.assert_close(a["seg"], b["seg"])
    torch.testing.assert_close(a["depth"], b["depth"])


def test_tasks_without_a_loss_are_refused():
    with pytest.raises(ValueError, match=r"\['edges'\] have no training loss"):
        MultiTaskModule({**MODEL, "tasks": {"seg": 19, "depth": 1, "edges": 1}}, lr=1e-3)


def _normals_batch(seed: int = 0) -> dict:
    batch = _batch(seed)
    g = torch.Generator().manual_seed(seed + 1)
    n = torch.nn.functional.normalize(torch.randn(2, 3, 64, 128, generator=g), dim=1)
    n[:, :, :, :16] = 0.0  # no label there
    return {**batch, "normals": n}


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa"])
def test_three_tasks_train_with_learned_or_dynamic_weights(tmp_path, weighting):
    """seg + depth + normals: every task has a loss term and a weight, and validation logs the
    normals figures."""
    module = MultiTaskModule({**MODEL, "tasks": {"seg": 19, "depth": 1, "normals": 3}}, lr=1e-3,
                             loss_config={"weighting": weighting})
    assert module.criterion.tasks == ["seg", "depth", "normals"]
    assert set(module.criterion.weighting.weights()) == {"seg", "depth", "normals"}
    if weighting == "uncertainty":
        assert set(module.criterion.weighting.log_vars) == {"seg", "depth", "normals"}
    batch = _normals_batch()
    out = module(batch["image"])
    assert out["normals"].shape == (2, 3, 64, 128)
    torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(2, 64, 128))
    losses = module.criterion(out, batch)
    assert set(losses) == {"loss_seg", "loss_depth", "loss_normals", "loss"}
    torch.testing.assert_close(losses["loss"], losses["loss_seg"] + losses["loss_depth"] + losses["loss_normals"])
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        num_sanity_val_steps=0, limit_train_batches=1, limit_val_batches=1)
    loader = DataLoader([{k: v[i] for k, v in batch.items()} for i in range(2)], batch_size=2)
    trainer.fit(module, loader, loader)
    logged = trainer.callback_metrics
    for key in ("val/normal_mean", "val/normal_median", "val/normal_11_25", "val/normal_22_5", "val/normal_30",
                "train/weight_normals", "val/loss_normals"):
        assert key in logged, key
    assert 0 < float(logged["val/normal_mean"]) < 180 and 0 <= float(logged["val/normal_30"]) <= 1
    if weighting == "dwa":  # after two epochs the weights follow the loss ratios: they sum to the task count
        assert sum(module.criterion.weighting.weights().values()) == pytest.approx(3.0)
        assert module.criterion.weighting.weights() != {"seg": 1.0, "depth": 1.0, "normals": 1.0}


def test_depth_init_and_bn_momentum():
    module = MultiTaskModule(MODEL, lr=1e-3, depth_init_m=20.0, bn_momentum=0.1)
    assert module.model.heads["depth"][-1].bias.item() == pytest.approx(torch.log(torch.tensor(20.0)).item() / 5)
    bns = [m for m in module.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns)
    with pytest.raises(ValueError, match="bn_momentum"):
        MultiTaskModule(MODEL, lr=1e-3, bn_momentum=0.0)


def test_from_config_builds_the_stage_from_the_recipe(tiny_recipe, tiny_cityscapes):
    d = tiny_recipe(tiny_cityscapes)
    d["model"].update(depth_init_m=20.0, bn_momentum=0.2)
    d["loss"] = {"depth": "l1", "weighting": "dwa", "dwa_temperature": 3.0}
    d["optimizer"] = {"betas": [0.8, 0.99], "pct_start": 0.2}
    recipe = recipe_from_dict(d)
    record = {"index": 0, "name": "s0"}
    module = MultiTaskModule.from_config(recipe, record)
    hp = module.hparams
    assert hp["lr"] == 2e-3 and hp["stage"] == record and hp["model_config"]["decoder_channels"] == 16
    assert hp["loss_config"] == recipe.loss.model_dump() and hp["optimizer_config"] == recipe.optimizer.model_dump()
    assert module.criterion.depth_loss == "l1" and module.criterion.weighting.temperature == 3.0
    assert module.channels_last and module.model.heads["depth"][-1].bias.item() == pytest.approx(math.log(20.0) / 5)
    later = MultiTaskModule.from_config(recipe, {"index": 0, "name": "s0"}, fresh=False)
    assert later.model.heads["depth"][-1].bias.item() != pytest.approx(math.log(20.0) / 5)  # weights come from a checkpoint
    # Without a recipe: the recipe's defaults.
    plain = MultiTaskModule(MODEL, lr=1e-3).hparams
    assert plain["optimizer_config"] == OptimizerConfig().model_dump() and plain["loss_config"] == LossConfig().model_dump()


def test_a_one_step_warm_up_is_refused_naming_the_settings(tmp_path):
    # OneCycleLR divides by (pct_start * steps - 1): 5 steps at pct_start 0.2 would divide by zero
    module = MultiTaskModule(MODEL, lr=1e-3, optimizer_config={"pct_start": 0.2})
    with pytest.raises(ValueError, match=r"5 optimiser steps and optimizer\.pct_start=0\.2 makes its warm-up exactly one step"):
        _trainer(tmp_path, 5).fit(module, DataLoader([_batch()] * 5, batch_size=None))
