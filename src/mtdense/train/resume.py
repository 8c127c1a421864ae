"""Resume after any kill: atomic resume points and a training order that a resumed run replays.

A run killed at any moment (in an epoch, in validation, between stages) continues from its
newest resume point and ends with the same weights as a run left alone:

- :class:`ResumePoint` writes ``checkpoints/last.ckpt`` after every training epoch and every
  ``checkpoint_minutes`` within one, whatever the validation interval. Every checkpoint goes
  through :class:`AtomicCheckpointIO` (written beside, flushed, renamed): a kill leaves the
  previous checkpoint or the new one, never a part.
- The training order and every random augmentation are functions of ``(seed, epoch, sample)``,
  not of the process's random state: :class:`EpochSampler` draws each epoch's order and one seed
  per sample from ``(seed, epoch)``, and :class:`SeededSamples` runs the sample's transform under
  that seed. The resume point records the data position (epoch, batches done), and a resumed
  sampler skips the batches already trained on.
- :func:`newest_checkpoint` finds where a run folder stopped: the last checkpoint of the latest
  stage that has one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import Dataset, Sampler

from mtdense.io import atomic_path
from mtdense.models.weights import read_checkpoint

__all__ = ["AtomicCheckpointIO", "EpochSampler", "SeededSamples", "ResumePoint", "newest_checkpoint", "LAST"]

LAST = "last.ckpt"
"""Name of a stage's resume point in its ``checkpoints/`` folder."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing each file beside its target and renaming it over.

    It reads checkpoints as mtdense does everywhere (:func:`~mtdense.models.weights.read_checkpoint`):
    tensors and plain settings only, never a pickle that could run code.
    """

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path)  # on the CPU; Lightning moves the states to the device

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options}")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled indices, each with its own seed, drawn from ``(seed, epoch)`` alone.

    Yields ``(index, sample_seed)`` pairs for :class:`SeededSamples`. Lightning calls
    :meth:`set_epoch` before each epoch; :meth:`resume_at` makes the next pass start at an
    epoch and position (the batches a killed run had trained on are skipped).

    Args:
        seed: The run's seed for this stage.
        size: Number of samples (may be set later, once the dataset is listed).
        shuffle: Draw a new order every epoch (``False``: 0, 1, 2, ...; seeds still drawn).
    """

    def __init__(self, seed: int, size: int = 0, shuffle: bool = True):
        self.size = int(size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Start the next pass at ``epoch``, without its first ``samples_done`` samples."""
        self.epoch = int(epoch)
        self._skip = int(samples_done)

    def order(self, epoch: int) -> list[tuple[int, int]]:
        """The ``(index, sample_seed)`` pairs of an epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        indices = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        return list(zip(indices.tolist(), seeds.tolist()))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self._skip = self._skip, 0
        return iter(self.order(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.size


class SeededSamples(Dataset):
    """A dataset whose items are fetched by ``(index, seed)``: the item's randomness comes from the seed.

    The transform's random draws (torch's generator: crop box, flip, colour jitter) are made
    under ``torch.manual_seed(seed)`` in a forked random state, so an item is the same in any
    process, worker or resumed run, and the caller's random state is left as it was.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class ResumePoint(Checkpoint):
    """Writes ``last.ckpt`` after every training epoch and every ``minutes`` within one.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning runs it after the other
    callbacks (the best-checkpoint's state it saves is that of the same epoch). Its state in the checkpoint is the data position (epoch, batches done in it), which it
    hands back to the train sampler when a run resumes.

    Args:
        path: The checkpoint file (``<stage>/checkpoints/last.ckpt``).
        sampler: The train loader's :class:`EpochSampler`.
        batch_size: Samples per batch and process (a resumed sampler skips ``batches x batch_size``).
        minutes: Interval of the checkpoints within an epoch; ``0``: at epoch ends only.
    """

    def __init__(self, path: str | Path, sampler: EpochSampler, batch_size: int, minutes: float):
        self.path = Path(path)
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.minutes = float(minutes)
        self.epoch = 0
        self.batches = 0
        self._last_save = time.monotonic()
        self._exact = True

    @property
    def state_key(self) -> str:
        return "ResumePoint"

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.batches = int(state_dict["epoch"]), int(state_dict["batches"])
        if self._exact:
            self.sampler.resume_at(self.epoch, self.batches * self.batch_size)
        # With several processes Lightning wraps the sampler in a distributed one: a resumed
        # epoch is then trained again from its start (its order is still the same).

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._exact = trainer.world_size == 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:  # a fresh epoch (a resumed one keeps its position)
            self.epoch, self.batches = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches = batch_idx + 1
        # Not after an epoch's last batch: its validation and the epoch-end save come next, and
        # Lightning resumes a checkpoint taken there as the start of the next epoch.
        last_batch = self.batches >= trainer.num_training_batches
        if self.minutes > 0 and not last_batch and time.monotonic() - self._last_save >= self.minutes * 60:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches = trainer.current_epoch + 1, 0
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()


def newest_checkpoint(stage_dirs: Sequence[Path]) -> tuple[int, Path] | None:
    """``(stage index, last.ckpt)`` of the latest stage with a resume point; ``None`` if none has one."""
    for index in reversed(range(len(stage_dirs))):
        path = Path(stage_dirs[index]) / "checkpoints" / LAST
        if path.is_file():
            return index, path
    return None
