"""The row of each spot that a model fitted per spot (NMFDeconv with ``inference="per_spot"``)
looks its parameters up by (``obs["_indices"]``), held in an AnnData of the model's own that
shares the user's matrices: building the model from a reference, or loading it, leaves the
user's spots as they were (their obs without the column, as an amortised model's), and
the model reads and trains on the spots the user holds now where they changed in place."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._matrices import with_column
from ._query_source import keep_write_target, spots_now
from ._spots import SPOT_INDEX, training_rows


def own_spot_index(adata: AnnData) -> AnnData:
    """``adata`` with each spot's row in an obs of its own (nothing copied; ``adata`` is
    unchanged); a backed file's spots themselves, which take the column as before (anndata
    builds no AnnData sharing a backed file's matrices).

    Examples
    --------
    >>> spots = AnnData(np.ones((3, 2)))
    >>> own_spot_index(spots).obs[SPOT_INDEX].tolist(), SPOT_INDEX in spots.obs
    ([0, 1, 2], False)
    """
    if adata.isbacked:
        return adata
    obs = adata.obs.copy()
    obs[SPOT_INDEX] = np.arange(adata.n_obs)
    obs.index = obs.index.astype(str)  # anndata's own names: spots named 0, 1, ... too
    # the matrices the model reads, not obsm: a table there indexed 0, 1, ... is refused
    return AnnData(X=adata.X, obs=obs, var=adata.var, layers=dict(adata.layers))


def follow_spots(model) -> None:
    """Before a per-spot model trains on its own AnnData (:func:`own_spot_index`): where the
    spots it was given (``from_reference``, ``load``) were subset, reordered or their counts
    replaced in place since (:func:`~deltavae.model._query_source.spots_now`), it reads them
    as they are now, each spot at its own parameters' row (found by name), as a model set up
    on the spots themselves trains on them."""
    now = spots_now(model)
    if now is None:
        return
    rows = training_rows(pd.Index(now.obs_names.astype(str)), model.spot_names_)
    own = model._validate_anndata(with_column(now, SPOT_INDEX, rows))
    manager = model.get_anndata_manager(own, required=True)
    model._adata, model._adata_manager = own, manager
    model.registry_, model.summary_stats = manager.registry, manager.summary_stats
    keep_write_target(model, now)
