"""An encoder's start that does not depend on the order of its input genes."""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn


def _natural_key(name: str) -> tuple:
    """``name`` with its runs of digits read as numbers: ``gene_2`` before ``gene_10``."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), name


def in_name_order(encoder: nn.Module, genes) -> None:
    """Give each input gene of ``encoder``'s first linear layer, freshly drawn, the column drawn
    for its place among ``genes`` in natural name order (numbers in names read as numbers,
    so ``gene_0, gene_1, ..., gene_10`` keep their columns): the same start for the same seed
    whatever the order of the genes (reversed genes put a reference-free NMFDeconv's
    proportions 0.20 apart, Archetypes' weights 0.22, after 20 epochs). Columns past
    ``len(genes)`` (one-hot covariates) are kept.

    Examples
    --------
    >>> layer = nn.Linear(3, 2)
    >>> before = layer.weight.detach().clone()
    >>> in_name_order(layer, ["g10", "g2", "g9"])  # g2, g9, g10: g10 takes the third column
    >>> bool((layer.weight[:, 0] == before[:, 2]).all())
    True
    """
    first = next(m for m in encoder.modules() if isinstance(m, nn.Linear))
    names = [str(name) for name in genes]
    order = sorted(range(len(names)), key=lambda i: _natural_key(names[i]))
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    if (rank == np.arange(len(names))).all():
        return  # already in that order: the draw as it is
    with torch.no_grad():
        drawn = first.weight[:, : len(names)].clone()
        first.weight[:, : len(names)] = drawn[:, torch.as_tensor(rank)]
