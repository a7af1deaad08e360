"""Data loading whose order is a pure function of (seed, step): resuming continues the exact batch order.

Each epoch is a permutation drawn from (seed, epoch), split evenly over ranks (DistributedSampler-style
padding), and the sampler starts at the sample the saved step had reached.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tools.core.distributed import DistContext
from tools.core.errors import UserError


class ResumableSampler(Sampler[int]):
    """An endless, rank-sharded, seed-determined stream of dataset indices starting at `start_sample`."""

    def __init__(self, dataset_len: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_sample: int = 0, shuffle: bool = True) -> None:
        self.dataset_len = dataset_len
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_sample = start_sample
        self.shuffle = shuffle
        self.per_rank = -(-dataset_len // world_size)  # ceil: ranks get equal counts

    def _epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.dataset_len, generator=gen).tolist()
        else:
            order = list(range(self.dataset_len))
        padded = (order * (self.world_size * self.per_rank // max(1, len(order)) + 1))
        padded = padded[: self.world_size * self.per_rank]
        return padded[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start_sample, self.per_rank)
        while True:
            yield from self._epoch_indices(epoch)[offset:]
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2**62


def clamped_batch_size(batch_size: int, dataset_len: int, ctx: DistContext, name: str) -> int:
    """A batch never larger than one process's share of the data: a bigger one only repeats samples within
    the batch, and loading thousands of clips at once exhausted the memory without any message."""
    per_rank = -(-dataset_len // ctx.world_size)
    if batch_size <= per_rank:
        return batch_size
    if ctx.is_main:
        print(f"warning: --batch_size {batch_size} is larger than the {per_rank} samples of {name} per process; "
              f"using batch size {per_rank}")
    return per_rank


def make_train_loader(dataset: Dataset, batch_size: int, seed: int, ctx: DistContext,
                      start_step: int = 0, num_workers: int = 0, name: str = "training data") -> DataLoader:
    """An endless loader of per-rank batches that resumes at `start_step`."""
    if len(dataset) == 0:
        raise UserError(f"{name} is empty; check --data_path and the split names in the config")
    batch_size = clamped_batch_size(batch_size, len(dataset), ctx, name)
    sampler = ResumableSampler(len(dataset), seed, ctx.rank, ctx.world_size,
                               start_sample=start_step * batch_size)
    # An own generator: otherwise creating the iterator draws from the global RNG, and a resumed run
    # would diverge from an uninterrupted one by that one draw.
    generator = torch.Generator().manual_seed(seed * 1_000_003 + start_step)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=True, pin_memory=ctx.device.type == "cuda",
                      persistent_workers=num_workers > 0, generator=generator)
