"""What the spot models (NMFDeconv, Archetypes) share: registering spots, and reading their
counts a chunk of rows at a time, so that a first pass over a backed file (a starting point, a
candidate set) never holds the whole matrix."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import scvi
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField

from .._checks import dense
from ._genes import _refuse_duplicates
from ._validation import check_data, check_setup_target, warn_user

#: Spots read at a time by the first passes.
READ_CHUNK = 10_000

#: obs column holding each spot's row, for models that look per-spot parameters up by it.
SPOT_INDEX = "_indices"


def warn_empty_spots(n_empty: int, n_spots: int, what: str, n_genes: int) -> None:
    """Warn that ``n_empty`` of ``n_spots`` spots have no counts in the ``n_genes`` genes a
    model reads, so their ``what`` (proportions, weights) are the prior's, not an estimate."""
    if n_empty:
        warn_user(
            f"{n_empty} of {n_spots} spots have no counts in the {n_genes} genes the model "
            f"reads: their {what} are the prior's (one value for all of them), not an "
            "estimate. Leave them out of the analysis, or drop spots without counts before "
            "training (sc.pp.filter_cells(spots, min_counts=1))."
        )


class SpotModelMixin:
    """Spot registration and chunked reads for models of spatial spots' raw counts.

    Each model's ``setup_anndata`` (its own arguments and docstring) calls
    :meth:`_register_spots` with the fields it adds to the counts.
    """

    @classmethod
    def _register_spots(
        cls, adata, layer, setup_method_args, extra_fields=(), spot_index=False, **kwargs
    ) -> None:
        """The body of each spot model's ``setup_anndata``: the counts checked a chunk of rows
        at a time, registered as raw counts, plus the model's ``extra_fields`` and, with
        ``spot_index``, each spot's row (written to ``obs[SPOT_INDEX]`` once the data passed)."""
        check_setup_target(adata)
        _refuse_duplicates(pd.Index(adata.var_names.astype(str)), "adata")
        check_data(adata, layer, kind="counts", unit="spots")
        fields = [LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True), *extra_fields]
        if spot_index:
            adata.obs[SPOT_INDEX] = np.arange(adata.n_obs)
            fields.append(NumericalObsField(REGISTRY_KEYS.INDICES_KEY, SPOT_INDEX))
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def _counts(self):
        """The registered count matrix of the model's AnnData (on disk when backed)."""
        return self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)

    def _read_rows(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Dense float64 counts of the (sorted) ``rows``, read ``READ_CHUNK`` rows at a time."""
        X, blocks = self._counts(), []
        for start in range(0, len(rows), READ_CHUNK):
            block = X[rows[start : start + READ_CHUNK]]
            blocks.append(dense(block if columns is None else block[:, columns]))
        return np.concatenate(blocks) if blocks else np.zeros((0, X.shape[1]))

    def _row_chunks(self, columns: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Dense float64 counts of every spot, ``READ_CHUNK`` rows at a time, in file order."""
        X = self._counts()
        for start in range(0, X.shape[0], READ_CHUNK):
            block = X[start : start + READ_CHUNK]
            yield dense(block if columns is None else block[:, columns])

    def _sample_rows(self, n_max: int) -> np.ndarray:
        """Every row when there are at most ``n_max``, else ``n_max`` random rows (seeded by
        ``scvi.settings.seed``), sorted so that a backed file is read front to back."""
        n = self.adata.n_obs
        if n <= n_max:
            return np.arange(n)
        rng = np.random.default_rng(scvi.settings.seed)
        return np.sort(rng.choice(n, n_max, replace=False))
