"""What every dataset of mtdense shares: a list of frames, decoded one at a time, optionally kept.

A format (Cityscapes, a folder of the user's own data, NYUv2) lists its frames and says how one
is decoded (:meth:`FrameDataset.load_frame`); indexing, the in-memory cache and the transform
are here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["FrameDataset", "copy_sample"]


def copy_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A copy of a decoded sample's arrays (a memcpy, far cheaper than decoding): nothing a
    transform does to it reaches a cached one."""
    return {key: value.copy() if isinstance(value, (np.ndarray, dict)) else value for key, value in sample.items()}


class FrameDataset(Dataset, ABC):
    """Frames decoded by :meth:`load_frame`, then passed through ``transform``.

    Subclasses set :attr:`frames` and call :meth:`_init_frames`; with ``cache_in_memory`` the
    decoded samples are kept (each DataLoader worker holds its own copy) and copies handed out.
    """

    frames: Sequence[Any]
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None

    def _init_frames(self, frames: Sequence[Any], transform: Callable[[dict[str, Any]], dict[str, Any]] | None,
                     cache_in_memory: bool) -> None:
        self.frames = list(frames)
        self.transform = transform
        self._cache: dict[int, dict[str, Any]] | None = {} if cache_in_memory else None

    @abstractmethod
    def load_frame(self, frame: Any) -> dict[str, Any]:
        """Decode one frame into a sample (``image``, labels, ``paths``)."""

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self, index: int) -> dict[str, Any]:
        sample = None if self._cache is None else self._cache.get(index)
        if sample is None:
            sample = self.load_frame(self.frames[index])
            if self._cache is None:
                return sample
            self._cache[index] = sample
        return copy_sample(sample)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} frames")
        sample = self._load(index % len(self))
        return self.transform(sample) if self.transform is not None else sample
