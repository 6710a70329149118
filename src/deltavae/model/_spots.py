"""What the spot models (NMFDeconv, Archetypes, SpatialImputer) share: registering spots,
reading their counts a chunk of rows at a time, so that a first pass over a backed file (a
starting point, a candidate set) never holds the whole matrix, and the spots a per-spot fit
loads onto."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import scvi
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import LayerField, NumericalObsField

from .._checks import dense
from ._validation import check_data, check_key_added, check_setup_target, warn_user

#: Spots read at a time by the first passes.
READ_CHUNK = 10_000

#: obs column holding each spot's row, for models that look per-spot parameters up by it.
SPOT_INDEX = "_indices"


def prefixed(key_added: str | None, *keys: str) -> tuple[str, ...]:
    """A spot model's result keys, each prefixed ``<key_added>_`` when ``key_added`` is given.

    Examples
    --------
    >>> prefixed(None, "proportions"), prefixed("ref2", "proportions", "cell_abundance")
    (('proportions',), ('ref2_proportions', 'ref2_cell_abundance'))
    """
    if key_added is None:
        return keys
    key_added = check_key_added(key_added)
    return tuple(f"{key_added}_{key}" for key in keys)


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
        spots = pd.Index(adata.obs_names.astype(str))
        if spots.has_duplicates:  # results are matched back to spots by name
            raise ValueError(
                f"Spot names in adata are not unique (repeated: "
                f"{spots[spots.duplicated()].unique()[:5].tolist()}); results are matched to "
                "spots by name: make them unique (adata.obs_names_make_unique())."
            )
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

    def _read_rows(
        self, rows: np.ndarray, columns: np.ndarray | None = None, dtype=np.float64
    ) -> np.ndarray:
        """Dense counts (``dtype``) of the (sorted) ``rows``, read ``READ_CHUNK`` rows at a
        time."""
        X, blocks = self._counts(), []
        for start in range(0, len(rows), READ_CHUNK):
            block = X[rows[start : start + READ_CHUNK]]
            block = dense(block if columns is None else block[:, columns])
            blocks.append(block.astype(dtype, copy=False))
        return np.concatenate(blocks) if blocks else np.zeros((0, X.shape[1]), dtype=dtype)

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


def spots_to_load(adata, attr_dict: dict, var_names, state_dict: dict):
    """The spots a saved per-spot model (:class:`SpatialImputer`) loads onto: its genes (on a
    copy), and, where it fitted parameters per spot, its spots in the fitted order.

    The same spots in another order are put back in the fitted order by name, with a warning;
    other spots, or another number of them, are refused: the parameters belong to the spots.
    """
    genes = pd.Index(np.asarray(var_names).astype(str))
    missing = genes[~genes.isin(adata.var_names.astype(str))]
    if len(missing):
        raise ValueError(
            f"adata lacks {len(missing)} of the model's {len(genes)} spot genes "
            f"(e.g. {missing[:5].tolist()}); pass the spots the model was fitted on."
        )
    per_spot = state_dict.get("log_concentration")
    fitted = attr_dict.get("spot_names_")  # absent from models saved before it was kept
    names = pd.Index(adata.obs_names.astype(str))
    rows = slice(None)
    if per_spot is not None and not (fitted is not None and names.equals(fitted)):
        same = fitted is not None and len(names) == len(fitted) and not names.has_duplicates
        if same and names.isin(fitted).all():
            warn_user(
                f"adata has the model's {len(names)} spots in another order; they are put back "
                "in the fitted order by name (on a copy: adata itself is unchanged), and "
                "results follow that order."
            )
            rows = names.get_indexer(fitted)
        elif fitted is not None or len(names) != per_spot.shape[0]:
            unknown = names.difference(fitted) if fitted is not None else names[:0]
            raise ValueError(
                f"This model fitted parameters for each of its {per_spot.shape[0]} spots "
                f"(design='deconvolution'), so it loads onto those spots only; got "
                f"{len(names)} spots"
                + (
                    f", {len(unknown)} of them not fitted (e.g. {unknown[:3].tolist()})"
                    if len(unknown)
                    else ""
                )
                + ". Pass the spots the "
                "model was fitted on; for other spots fit a new model "
                "(SpatialImputer.from_reference) or use design='latent', whose encoder maps "
                "any spots."
            )
    adata = adata[rows, genes.to_numpy()]
    adata = adata.to_memory() if adata.isbacked else adata.copy()
    adata.obs[SPOT_INDEX] = np.arange(adata.n_obs)
    return adata
