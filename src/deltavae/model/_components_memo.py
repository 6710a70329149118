"""The counts' principal components a CGMDVAE fit computes after training (the refit's graph,
``refit_mixture``; the check of unlabelled types, ``warn_unlabelled_types``), kept with the
model for the next fit that asks for the same ones: a fit again of the same cells (the same
seed gives the same split and the same drawn cells) computed the same PCA again, 1.5 CPU s on
20,000 cells of 100 counts each, 6-14 s on denser counts.

Kept by the content it was computed from (a SHA-1 of the rows' values, the condition groups,
the seed and the kind of data), not by cell names or positions: counts changed in place, other
cells or another seed compute anew. One entry per model, not saved with it.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse


def _fingerprint(x, group, seed: int, counts: bool) -> str:
    digest = hashlib.sha1(f"{x.shape}{x.dtype}{seed}{counts}".encode())
    if sparse.issparse(x):
        x = x.tocsr()
        parts = (x.data, x.indices, x.indptr)
    else:
        parts = (np.ascontiguousarray(x),)
    parts += () if group is None else (np.ascontiguousarray(group),)
    for part in parts:
        digest.update(part.dtype.str.encode())
        digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    return digest.hexdigest()


def memoised_components(model, x, group, seed: int, counts: bool = True) -> np.ndarray:
    """:func:`~deltavae.train._label_space.data_components` of ``x`` (the cells' rows),
    ``group`` and ``seed``, computed once for the same values (a copy of the model's
    entry)."""
    from ..train._label_space import data_components

    key = _fingerprint(x, group, seed, counts)
    kept = model.__dict__.get("_components_memo")
    if kept is None or kept[0] != key:
        kept = (key, np.asarray(data_components(x, group, seed, counts=counts)))
        model.__dict__["_components_memo"] = kept
    return kept[1].copy()
