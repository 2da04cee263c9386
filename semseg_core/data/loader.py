"""Data loaders: an infinite, seeded, resumable training stream and a plain ordered test loader.

Training order is a pure function of (seed, global sample position): position g belongs to epoch
e = g // N and takes element g % N of the permutation drawn from ``default_rng([seed, e])``; its augmentation
is drawn from ``default_rng([seed, g])``. Global batch k covers positions k*B .. k*B+B-1 (B = SOLVER.IMS_PER_BATCH
over all ranks; rank r takes its contiguous slice), so starting at iteration k gives exactly the batches an
uninterrupted run sees from k on, whatever the number of workers.

DATALOADER.ASPECT_RATIO_GROUPING (detectron2's AspectRatioGroupedDataset, the authors' setting): each rank walks its
share of that stream (the positions it would take without grouping, in order) and puts every image into one of two
buckets, landscape (w > h) or not; a batch is emitted when a bucket holds the rank's batch size. Images of a batch
then have similar shapes, so less padding. Batch k of a rank is found by replaying its stream from position 0
(index arithmetic only, no image is read), so resuming at k is still exact. When every image falls into one bucket,
the batches are those without grouping. detectron2 groups inside each loader worker, so its batches depend on
NUM_WORKERS; grouping in the sampler keeps ours independent of it (same rule, deterministic order).
"""

import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import DataLoader, Sampler

from semseg_core.data.dataset import build_dataset

logger = logging.getLogger(__name__)


def _as_list(batch: List[Dict]) -> List[Dict]:
    return batch


class SeededBatchSampler(Sampler):
    """Yields, forever from iteration `start_iter`, this rank's list of ``(dataset_index, seed, position)``."""

    def __init__(self, size: int, total_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_iter: int = 0, aspect_buckets: Optional[Sequence[int]] = None):
        if size < 1:
            raise ValueError("cannot build a training loader over an empty dataset")
        if total_batch % world_size:
            raise ValueError(f"SOLVER.IMS_PER_BATCH ({total_batch}) must be divisible by the number of processes "
                             f"({world_size})")
        self.size, self.total_batch, self.seed = size, total_batch, int(seed)
        self.rank, self.world_size, self.start_iter = rank, world_size, int(start_iter)
        self.per_rank = total_batch // world_size
        self._perm_epoch, self._perm = -1, None
        if aspect_buckets is not None and len(aspect_buckets) != size:
            raise ValueError(f"{len(aspect_buckets)} aspect buckets for {size} images")
        self.aspect_buckets = None if aspect_buckets is None else np.asarray(aspect_buckets, dtype=np.int64)

    def _index_at(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def batch(self, iteration: int) -> List[Tuple[int, int, int]]:
        first = iteration * self.total_batch + self.rank * self.per_rank
        return [(self._index_at(g), self.seed, g) for g in range(first, first + self.per_rank)]

    def __iter__(self) -> Iterator[List[Tuple[int, int, int]]]:
        if self.aspect_buckets is not None:
            yield from self._grouped_batches()
            return
        iteration = self.start_iter
        while True:
            yield self.batch(iteration)
            iteration += 1

    def _rank_positions(self) -> Iterator[int]:
        """This rank's positions in order: its contiguous slice of every global batch."""
        first = self.rank * self.per_rank
        g = 0
        while True:
            yield from range(g + first, g + first + self.per_rank)
            g += self.total_batch

    def _grouped_batches(self) -> Iterator[List[Tuple[int, int, int]]]:
        buckets: Dict[int, List[Tuple[int, int, int]]] = {}
        emitted = 0
        for g in self._rank_positions():
            index = self._index_at(g)
            bucket = buckets.setdefault(int(self.aspect_buckets[index]), [])
            bucket.append((index, self.seed, g))
            if len(bucket) == self.per_rank:
                batch = list(bucket)
                bucket.clear()
                if emitted >= self.start_iter:
                    yield batch
                emitted += 1


def _resolve_seed(cfg, seed: Optional[int]) -> int:
    if seed is not None:
        return int(seed)
    if int(cfg.SEED) >= 0:
        return int(cfg.SEED)
    drawn = int(np.random.SeedSequence().entropy % (2**31))
    logger.info("training data order: no seed given and SEED < 0, drew seed %d", drawn)
    return drawn


def build_train_loader(cfg, rank: int = 0, world_size: int = 1, seed: Optional[int] = None,
                       start_iter: int = 0) -> DataLoader:
    """Infinite loader over DATASETS.TRAIN (concatenated); each element is this rank's batch, a list of dicts."""
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("DATASETS.TRAIN is empty")
    datasets = [build_dataset(cfg, name, is_train=True) for name in names]
    dataset = datasets[0] if len(datasets) == 1 else _Concat(datasets)
    buckets = dataset.aspect_buckets() if bool(cfg.DATALOADER.ASPECT_RATIO_GROUPING) else None
    sampler = SeededBatchSampler(len(dataset), int(cfg.SOLVER.IMS_PER_BATCH), _resolve_seed(cfg, seed),
                                 rank, world_size, start_iter, aspect_buckets=buckets)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=int(cfg.DATALOADER.NUM_WORKERS),
                      collate_fn=_as_list)


def build_test_loader(cfg, name: str, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Ordered loader of dataset `name` (batch size 1, list of dicts); rank r gets items r, r+W, r+2W, ..."""
    dataset = build_dataset(cfg, name, is_train=False)
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=1, sampler=indices, num_workers=int(cfg.DATALOADER.NUM_WORKERS),
                      collate_fn=_as_list)


class _Concat:
    """Several training datasets as one index space (keys may carry an rng key, like OpenSetDataset's)."""

    def __init__(self, datasets):
        self.datasets = datasets
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def aspect_buckets(self) -> List[int]:
        return [b for d in self.datasets for b in d.aspect_buckets()]

    def __getitem__(self, key):
        index, rest = (key[0], key[1:]) if isinstance(key, tuple) else (int(key), ())
        which = int(np.searchsorted(self.offsets, index, side="right") - 1)
        local = index - int(self.offsets[which])
        return self.datasets[which][(local, *rest) if rest else local]
