"""A run killed anywhere and resumed ends with the weights and scores of a run left alone.

The kills: in an epoch (between two resume points), during a validation, between two stages
(all raised from a callback in this process, which writes nothing more, as a kill would), and a
real SIGKILL of ``mtdense train`` in a subprocess. Each resumed run is compared with one
uninterrupted run of the same recipe: two stages, random crops, flips and colour jitter, a
resume point after every batch.
"""

import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
import yaml

from mtdense.cli import main
from mtdense.train import recipe_from_dict, train
from mtdense.train.resume import EpochSampler, SeededSamples


class Killed(Exception):
    """Stands for a SIGKILL: nothing runs after it (Lightning writes no checkpoint on an exception)."""


class KillAt(L.Callback):
    """Raises :class:`Killed` at the ``n``-th call of ``hook`` over the whole run (all stages)."""

    def __init__(self, hook: str, n: int):
        self.hook, self.n, self.calls = hook, n, 0
        setattr(self, hook, self._count)

    def _count(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise Killed(f"{self.hook} #{self.n}")


def _recipe(tiny_recipe, root) -> dict:
    d = tiny_recipe(root, epochs=2, crop_scale=[0.5, 1.0])
    d["stages"].append({"name": "s1", "size": [32, 64], "epochs": 1, "batch_size": 2, "lr": 1e-3, "crop_scale": [0.5, 1.0]})
    d["trainer"].update(limit_train_batches=3, limit_val_batches=2, checkpoint_minutes=1e-9)  # a resume point every batch
    return d


def _weights(path):
    return {k: v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}


def _assert_same_run(result, reference):
    for got, want in zip(result.stages, reference.stages, strict=True):
        assert got.global_step == want.global_step
        assert got.best_score == pytest.approx(want.best_score, abs=0)
        a, b = _weights(got.last), _weights(want.last)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{got.name}: {k} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def reference(tiny_recipe, tiny_cityscapes, tmp_path_factory):
    d = _recipe(tiny_recipe, tiny_cityscapes)
    return d, train(recipe_from_dict(d), tmp_path_factory.mktemp("reference") / "run")


@pytest.mark.slow
@pytest.mark.parametrize("hook, n", [
    ("on_train_batch_end", 5),       # stage 0, epoch 1, batch 2 of 3
    ("on_validation_batch_end", 4),  # stage 0, the 2nd batch of the 2nd validation
    ("on_fit_start", 2),             # stage 1 about to start
], ids=["in-an-epoch", "during-validation", "between-stages"])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(reference, tmp_path, hook, n):
    d, want = reference
    recipe = recipe_from_dict(d)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train(recipe, run, recipe_text=yaml.safe_dump(d), callbacks=[KillAt(hook, n)])
    assert not list(run.rglob(".*.part*")), "a checkpoint write was left behind"
    _assert_same_run(train(recipe, run, resume=run), want)


@pytest.mark.slow
def test_sigkill_of_mtdense_train_then_resume_from_the_run_folder(reference, tmp_path):
    d, want = reference
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(d))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mtdense.cli", "train", str(recipe_file), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = run / "stage0-s0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    time.sleep(0.3)  # a few more steps, maybe in the middle of writing the next resume point
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (run / "model.pth").exists()
    assert main(["train", "--resume", str(run)]) == 0
    want_final = torch.load(want.out_dir / "model.pth", weights_only=True)["state_dict"]
    got_final = torch.load(run / "model.pth", weights_only=True)["state_dict"]
    for k in want_final:
        assert torch.equal(got_final[k], want_final[k]), k


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_over(tiny_recipe, tiny_cityscapes, tmp_path):
    d = tiny_recipe(tiny_cityscapes)
    recipe = recipe_from_dict(d)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train(recipe, run, recipe_text=yaml.safe_dump(d), callbacks=[KillAt("on_train_batch_end", 1)])
    assert (run / "recipe.yaml").is_file() and not list(run.rglob("*.ckpt"))
    result = train(recipe, run, resume=run)
    assert result.stages[0].global_step == 2 and (run / "model.pth").is_file()


def test_resume_point_is_written_every_epoch_whatever_the_validation_interval(tiny_recipe, tiny_cityscapes, tmp_path):
    d = tiny_recipe(tiny_cityscapes, epochs=2)
    d["trainer"]["check_val_every_n_epoch"] = 5  # never validates in this run
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train(recipe_from_dict(d), run, callbacks=[KillAt("on_train_epoch_start", 2)])
    saved = torch.load(run / "stage0-s0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 and saved["callbacks"]["ResumePoint"] == {"epoch": 1, "batches": 0}


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(seed=3, size=10), EpochSampler(seed=3, size=10)
    a.set_epoch(2)
    first = list(a)
    torch.manual_seed(123)  # the process's random state plays no part
    b.set_epoch(2)
    assert list(b) == first and sorted(i for i, _ in first) == list(range(10))
    b.set_epoch(3)
    assert list(b) != first
    b.resume_at(2, 4)
    assert list(b) == first[4:]
    assert list(b) == first  # the skip holds for one pass only


def test_seeded_samples_repeat_their_random_draws_and_leave_the_callers_state():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3) + i

    ds = SeededSamples(Noise())
    state = torch.get_rng_state()
    x = ds[(1, 77)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(ds[(1, 77)], x) and not torch.equal(ds[(1, 78)], x)


def test_train_command_resumes_a_run_folder_by_its_saved_recipe(tiny_recipe, tiny_cityscapes, tmp_path, capsys):
    d = tiny_recipe(tiny_cityscapes)
    d["data"]["root"] = None
    recipe_file = tmp_path / "given.yaml"
    recipe_file.write_text(yaml.safe_dump(d))
    run = tmp_path / "run"
    assert main(["train", str(recipe_file), "--out", str(run), "--set", f"data.root={tiny_cityscapes}"]) == 0
    capsys.readouterr()
    # The saved recipe carries data.root from --set: resuming needs neither the recipe nor --set.
    assert main(["train", "--resume", str(run)]) == 0
    assert f"resuming {run}" in capsys.readouterr().out
