"""Samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochSeededRandomSampler(Sampler[int]):
    """Random permutation per epoch from ``seed + epoch``; Lightning calls ``set_epoch``."""

    def __init__(self, num_samples: int, *, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples
