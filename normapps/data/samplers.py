"""Batch order that depends only on (seed, epoch, position), so a resumed run sees the same data."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSeededRandomSampler(Sampler[int]):
    """Random permutation per epoch from ``seed + epoch``; Lightning calls ``set_epoch``."""

    def __init__(self, num_samples: int, *, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, num_indices: int) -> None:
        """Make the next iteration start ``num_indices`` into this epoch's permutation."""
        self._skip = num_indices

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        skip, self._skip = self._skip, 0
        return iter(torch.randperm(self.num_samples, generator=g)[skip:].tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A DataLoader over an EpochSeededRandomSampler that Lightning can checkpoint mid-epoch.

    Lightning saves ``state_dict()`` with the fit loop and calls ``load_state_dict`` on resume;
    the next epoch iteration then skips the batches already trained on instead of replaying them.
    """

    # Batches the training fetcher holds beyond the one being trained on (none for sized loaders).
    _PREFETCHED = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._base = 0
        self._yielded = 0
        self._exhausted = False
        self._resume_batches = 0

    def __iter__(self):
        skip, self._resume_batches = self._resume_batches, 0
        if skip and isinstance(self.sampler, EpochSeededRandomSampler):
            self.sampler.skip_next(skip * self.batch_size)
        else:
            skip = 0
        self._base, self._yielded, self._exhausted = skip, 0, False
        for batch in super().__iter__():
            self._yielded += 1
            yield batch
        self._exhausted = True

    def state_dict(self) -> dict[str, int]:
        in_flight = 0 if self._exhausted else self._PREFETCHED
        return {"batches_done": self._base + max(self._yielded - in_flight, 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state.get("batches_done", 0))
        # A checkpoint taken at an epoch's end resumes with a fresh epoch.
        self._resume_batches = done if done < len(self) else 0
