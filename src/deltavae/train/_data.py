"""scvi-tools' data splitter and loader, with minibatches read in file order.

scvi-tools already streams minibatches from an AnnData opened ``backed="r"`` (its
``AnnTorchDataset`` slices the on-disk sparse or dense matrix per minibatch), and its
``AnnDataLoader`` already has a distributed sampler. Two things are added here:

* Each minibatch lists its cells in file order. A backed read must be sorted for HDF5 anyway
  (scvi-tools sorts it inside the dataset), so without this an in-memory and a backed run of
  the same seed would see the same cells in a different order, draw different noise for each
  and end in different models. Sorted, they train identically, and backed reads are
  sequential.
* In a forked DDP worker the backed file is opened afresh: HDF5 handles must not be shared
  across ``fork``.
* Optionally (``block_size``), each training minibatch is made of a few random blocks of
  cells that lie next to each other in the file, instead of cells drawn one by one (the block
  sampling of scDataset and similar on-disk loaders). A minibatch then reads a few contiguous
  stretches of the file; for zarr stores, whose chunks must be decompressed whole, this is
  several times faster than reading cells scattered over the whole store.
* Every model registers its AnnData with :class:`DeltaDataManager`, whose minibatches of a
  dask array (``AnnData(X=dask_array)``, anndata's ``read_elem_lazy``) are dense and of the
  registered dtype, as those of any other matrix.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse
from scvi.data import AnnDataManager, AnnTorchDataset
from scvi.dataloaders import AnnDataLoader, BatchDistributedSampler, DataSplitter
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, Subset
from torch.utils.data._utils.collate import default_convert

from .._rng import start_seed
from .._unchanged_on_failure import unchanged_on_failure
from ._label_split import keep_labels_in_training

logger = logging.getLogger(__name__)


def _file_order(batch: list[int], positions: np.ndarray) -> np.ndarray:
    batch = np.asarray(batch)
    return batch[np.argsort(positions[batch], kind="stable")]


def _block_order(rows: np.ndarray, block_size: int, generator) -> list[int]:
    # Positions grouped in blocks of neighbouring file rows, the blocks in random order.
    by_row = np.argsort(rows, kind="stable")
    # A short last block goes last, so batches of a multiple of block_size stay aligned.
    blocks = [by_row[i : i + block_size] for i in range(0, len(by_row), block_size)]
    n_full = len(by_row) // block_size
    order = [*torch.randperm(n_full, generator=generator).tolist(), *range(n_full, len(blocks))]
    return np.concatenate([blocks[i] for i in order]).tolist() if blocks else []


class FileOrderBatchSampler(BatchSampler):
    """A :class:`~torch.utils.data.BatchSampler` whose batches are sorted by file row.

    Parameters
    ----------
    sampler
        Sampler over positions ``0 .. len(rows) - 1`` (random for training).
    batch_size, drop_last
        As for :class:`~torch.utils.data.BatchSampler`.
    rows
        File row (AnnData ``obs`` index) of every position.
    block_size
        With a random ``sampler``: build each batch from random blocks of ``block_size``
        cells that are neighbours in the file, rather than from single cells.

    Examples
    --------
    >>> from torch.utils.data import SequentialSampler
    >>> s = FileOrderBatchSampler(SequentialSampler(range(3)), 3, False, np.array([9, 2, 5]))
    >>> [b.tolist() for b in s]
    [[1, 2, 0]]
    """

    def __init__(
        self,
        sampler,
        batch_size: int,
        drop_last: bool,
        rows: np.ndarray,
        block_size: int | None = None,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.rows = rows
        self.block_size = block_size

    def __iter__(self):
        if self.block_size and isinstance(self.sampler, RandomSampler):
            order = _block_order(self.rows, self.block_size, self.sampler.generator)
            stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
            batches = (order[i : i + self.batch_size] for i in range(0, stop, self.batch_size))
        else:
            batches = super().__iter__()
        for batch in batches:
            yield _file_order(batch, self.rows)


class FileOrderDistributedSampler(BatchDistributedSampler):
    """scvi-tools' :class:`~scvi.dataloaders.BatchDistributedSampler`, batches in file order.

    Each DDP process draws ``batch_size`` cells per step from its own share of the cells.

    Parameters
    ----------
    dataset
        Dataset (or any sized object) over positions ``0 .. len(rows) - 1``.
    rows
        File row of every position.
    **kwargs
        Passed to :class:`~scvi.dataloaders.BatchDistributedSampler` (``batch_size``,
        ``shuffle``, ``drop_last``, ``num_replicas``, ``rank`` ...).

    Examples
    --------
    >>> s = FileOrderDistributedSampler(range(4), np.arange(4), num_replicas=2, rank=1,
    ...                                 shuffle=False, batch_size=2)
    >>> [b.tolist() for b in s]
    [[1, 3]]
    """

    def __init__(self, dataset, rows: np.ndarray, **kwargs):
        super().__init__(dataset, **kwargs)
        self.rows = rows

    def __iter__(self):
        for batch in super().__iter__():
            yield _file_order(batch, self.rows)


def _single_batch(items: list[dict]) -> dict:
    # The sampler yields whole minibatches; the DataLoader wraps each in a list of one.
    return default_convert(items[0])


class FileOrderDataLoader(AnnDataLoader):
    """scvi-tools' :class:`~scvi.dataloaders.AnnDataLoader` with file-ordered minibatches.

    Takes the same arguments; ``distributed_sampler=True`` gives each DDP process its own
    share of the cells, as in scvi-tools. ``block_size`` (single process only) builds each
    shuffled minibatch from random blocks of neighbouring cells (see the module docstring).

    Examples
    --------
    >>> loader = FileOrderDataLoader(vae.adata_manager, batch_size=128)  # doctest: +SKIP
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        drop_dataset_tail: bool = False,
        distributed_sampler: bool = False,
        block_size: int | None = None,
        **kwargs,
    ):
        if block_size is not None and (int(block_size) != block_size or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
        if block_size is not None and distributed_sampler:
            raise ValueError(
                "block_size is not supported with strategy='ddp': each process already reads "
                "its own share of the cells; leave block_size=None."
            )
        rows = np.arange(adata_manager.adata.n_obs) if indices is None else np.asarray(indices)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        positions = range(len(rows))
        if distributed_sampler:
            sampler = FileOrderDistributedSampler(
                positions,
                rows,
                batch_size=batch_size,
                shuffle=shuffle,
                drop_last=drop_last,
                drop_dataset_tail=drop_dataset_tail,
                # torch's default, 0, gave every run the same order of minibatches, whatever
                # the seed; one process's order follows it. The same in every process.
                seed=start_seed(),
            )
        else:
            order = RandomSampler(positions) if shuffle else SequentialSampler(positions)
            sampler = FileOrderBatchSampler(order, batch_size, drop_last, rows, block_size)
        super().__init__(
            adata_manager, indices=rows, sampler=sampler, collate_fn=_single_batch, **kwargs
        )


class DeltaDataSplitter(DataSplitter):
    """scvi-tools' :class:`~scvi.dataloaders.DataSplitter` with ``FileOrderDataLoader``.

    Same arguments as the scvi-tools class (``distributed_sampler=True`` for DDP). In a
    process forked for DDP, a backed AnnData's file is reopened read-only before any read.
    The cells are split once (:meth:`split`, which the training runner calls before the fit),
    so that DDP's worker processes share the calling process's split.

    Examples
    --------
    >>> splitter = DeltaDataSplitter(vae.adata_manager, train_size=0.9)  # doctest: +SKIP
    """

    data_loader_cls = FileOrderDataLoader

    def __init__(self, *args, **kwargs):
        # scvi-tools' advice on a last minibatch of 1 or 2 cells, "to avoid errors during
        # model training": two cells train (BatchNorm needs two), and deltavae's train drops a
        # last minibatch of one itself (or refuses drop_last=False for it) where BatchNorm
        # trains; where one is left, it trains (a query model's frozen BatchNorm).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Last batch will have a small size of [12] ")
            super().__init__(*args, **kwargs)

    def split(self) -> None:
        """Split the cells into training, validation and test cells, unless already split.

        Each process that split them drew its own split from ``scvi.settings.seed``, and with
        the seed unset (scvi-tools' default) a DDP worker's differed from the others': cells
        one process trained on, another validated on; and the model recorded none.
        A label whose labelled cells all fell outside training gets one of them back, swapped
        with an unlabelled training cell (``keep_labels_in_training``).
        """
        if not hasattr(self, "train_idx"):
            super().setup()
            if self.external_indexing is None:  # the user's own split is kept as given
                parts = (self.train_idx, self.val_idx, self.test_idx)
                parts = keep_labels_in_training(self.adata_manager, *parts)
                self.train_idx, self.val_idx, self.test_idx = parts

    def setup(self, stage: str | None = None):
        """Split the cells (see :meth:`split`), under DDP as rank 0 did; in a DDP worker,
        reopen a backed file first."""
        adata = self.adata_manager.adata
        if adata.isbacked and self.trainer is not None and self.trainer.world_size > 1:
            # An HDF5 handle inherited through fork shares library state with the parent.
            adata.file.close()
            adata.file.open(adata.filename, "r")
            logger.debug("Rank %d reopened %s", self.trainer.global_rank, adata.filename)
        self.split()
        if self.trainer is not None and self.trainer.world_size > 1:
            # Under Lightning's script launcher (DDPStrategy()) or torchrun every process split
            # the cells itself, before the processes met: with scvi.settings.seed unset each
            # differently (cells one process validated on, another trained on; cells trained
            # twice or never). All take rank 0's split.
            parts = (self.train_idx, self.val_idx, self.test_idx)
            self.train_idx, self.val_idx, self.test_idx = self.trainer.strategy.broadcast(parts)


def all_training_cells(trainer) -> FileOrderDataLoader:
    """A loader of the training cells of ``trainer``'s run in shuffled minibatches, as one
    process reads them: under DDP every process's share, not the calling process's only
    (the mixture start clustered rank 0's: 1/N of the cells, and a rare type could be
    missed). The data loader's other settings (``batch_size`` ...) are the run's."""
    data = trainer.datamodule
    if trainer.world_size == 1:
        return data.train_dataloader()
    return data.data_loader_cls(
        data.adata_manager,
        indices=data.train_idx,
        shuffle=True,
        load_sparse_tensor=data.load_sparse_tensor,
        pin_memory=data.pin_memory,
        **{**data.data_loader_kwargs, "distributed_sampler": False},
    )


def split_sizes(n_cells: int, train_size: float, validation_size, split: dict) -> tuple[int, int]:
    """The training and validation cells of a run: the lengths of the first two lists of
    ``split["external_indexing"]`` where given (scvi-tools' positions, which ``train_size``
    and ``validation_size`` then do not split), else as scvi-tools splits the fractions.

    Examples
    --------
    >>> split_sizes(40, 0.9, None, {}), split_sizes(40, 0.8, 0.1, {})
    ((36, 4), (32, 4))
    >>> split_sizes(40, 0.9, None, {"external_indexing": [np.arange(33), np.arange(33, 40)]})
    (33, 7)
    >>> split_sizes(40, 1.0, None, {"external_indexing": [np.arange(40)]})
    (40, 0)
    >>> split_sizes(40, 0.9, None, {"external_indexing": [np.arange(40) < 30, np.arange(40) >= 30]})
    (30, 10)
    """
    external = split.get("external_indexing")
    if external is not None:
        parts = [*external, None, None][:2]
        # A boolean mask of every cell counts the cells it marks (model/_split_checks.py).
        return tuple(
            0 if part is None else int(np.count_nonzero(part))
            if np.asarray(part).dtype == bool else len(part)
            for part in parts
        )  # fmt: skip
    n_train = math.ceil(train_size * n_cells)
    if validation_size is None:
        return n_train, n_cells - n_train
    return n_train, math.floor(validation_size * n_cells)


class _DaskReadingDataset(AnnTorchDataset):
    """scvi-tools' dataset, with the minibatches of a dask array (``AnnData(X=dask_array)``,
    ``anndata.experimental.read_elem_lazy``) as those of any other matrix: dense, of the
    registered dtype. scvi-tools passes the computed slice on as it is: a float64 array
    failed in the first layer ("mat1 and mat2 must have the same dtype"), a scipy matrix
    (a dask array of sparse chunks) in torch's collation."""

    def __getitem__(self, indexes):
        data_map = super().__getitem__(indexes)
        for key, dtype in self.keys_and_dtypes.items():
            if type(self.data[key]).__module__.startswith("dask"):
                value = data_map[key]
                value = value.toarray() if sparse.issparse(value) else np.asarray(value)
                data_map[key] = value.astype(dtype, copy=False)
        return data_map


class DeltaDataManager(AnnDataManager):
    """scvi-tools' :class:`~scvi.data.AnnDataManager`, whose torch datasets read dask arrays
    as any other matrix (see :class:`_DaskReadingDataset`). Every model registers with it."""

    def register_fields(self, adata, source_registry=None, **transfer_kwargs):
        """scvi-tools' registration, ``adata`` left as it was if a field fails midway: the
        fields before it had rewritten another setup's codes (``obs["_scvi_batch"]``, ...)
        and ids (``uns["_scvi_uuid"]``), read as that setup's since.

        numpy's global generator is left as it was too: scvi-tools' count check draws the
        entries it looks at from it, so every ``setup_anndata`` (of ZINBVAE and the spot
        models), ``from_reference`` and ``load`` moved the user's stream on, and
        ``np.random.seed(0)`` before them no longer gave the numbers it gives without them."""
        state = np.random.get_state()  # noqa: NPY002
        try:
            with unchanged_on_failure(adata):
                super().register_fields(adata, source_registry, **transfer_kwargs)
        finally:
            np.random.set_state(state)  # noqa: NPY002

    def create_torch_dataset(self, indices=None, data_and_attributes=None, **kwargs):
        dataset = _DaskReadingDataset(self, getitem_tensors=data_and_attributes, **kwargs)
        return dataset if indices is None else Subset(dataset, indices)
