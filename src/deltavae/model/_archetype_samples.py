"""Archetypes' samples (``sample_key``): categories no spot carries, and each sample's
technical factors. A category without spots (a Categorical kept whole by ``adata[mask]``,
as subsetting to some slides does) was registered as a sample, and
:meth:`~deltavae.model.Archetypes.get_sample_factors` gave it a column of factors near 1
that no spot had fitted, as if it were a measured slide. Samples of fewer than 3 spots, and
sample names typed two ways ('slide1' and 'Slide1 '), are named at setup in the user's words.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS

from .._unchanged_on_failure import unchanged_on_failure
from ._few_cells import warn_few_cells
from ._scvi_glue import _FEW_CELLS_WARNING
from ._shared_setup import take_back_setup
from ._validation import warn_user

_SAMPLE = REGISTRY_KEYS.BATCH_KEY


def warn_unused_samples(adata: AnnData, sample_key: str | None) -> None:
    """Warn when ``adata.obs[sample_key]`` has categories no spot carries, with the line that
    drops them.

    Examples
    --------
    >>> obs = pd.DataFrame({"s": pd.Categorical(["A", "B"])}, index=["spot1", "spot2"])
    >>> warn_unused_samples(AnnData(obs=obs), "s")
    """
    if sample_key is None or not isinstance(adata.obs[sample_key].dtype, pd.CategoricalDtype):
        return
    column = adata.obs[sample_key]
    unused = column.cat.categories[~column.cat.categories.isin(column.dropna().unique())]
    if len(unused):
        col = f"adata.obs[{sample_key!r}]"
        warn_user(
            f"{col} has categories no spot carries ({list(map(str, unused[:5]))}): each is "
            "registered as a sample that no spot fits, and get_sample_factors gives it NaN. "
            f"Drop them before setup_anndata: {col} = {col}.cat.remove_unused_categories()."
        )


@contextlib.contextmanager
def samples_named(adata: AnnData, sample_key: str | None):
    """Registering ``sample_key``: scvi-tools' warning of a sample of fewer than 3 spots named
    its internal column and a code ("Category 2 in adata.obs['_scvi_batch']"); it is said
    instead with the user's column and sample names, after a registration that succeeded,
    with samples named two ways (``warn_few_cells``); a warning made an error leaves
    ``adata`` as it was."""
    with unchanged_on_failure(adata):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_FEW_CELLS_WARNING)
            yield
        if sample_key is not None:  # categories without spots: warn_unused_samples's
            warn_few_cells(adata, [sample_key], {}, unit="spot", unused=False)


def sample_factor_table(model) -> pd.DataFrame:
    """Each sample's technical factor of each gene (genes x samples); NaN for a registered
    sample without spots in the model's AnnData, which nothing fitted."""
    names, fitted = ["all spots"], np.ones(1, dtype=bool)
    take_back_setup(model)  # another model's setup since: its codes in the sample column
    if _SAMPLE in model.adata_manager.data_registry:
        names = list(model.adata_manager.get_state_registry(_SAMPLE).categorical_mapping)
        codes = np.asarray(model.adata_manager.get_from_registry(_SAMPLE)).ravel().astype(int)
        fitted = np.bincount(codes, minlength=len(names)) > 0
    gamma = model.module.technology()
    gamma = np.zeros((1, model.adata.n_vars)) if gamma is None else gamma.detach().cpu()
    factors = np.exp(np.asarray(gamma, dtype=np.float64))
    factors[~fitted] = np.nan
    return pd.DataFrame(factors.T, index=model.adata.var_names, columns=list(map(str, names)))
