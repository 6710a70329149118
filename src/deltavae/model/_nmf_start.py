"""Where :class:`deltavae.model.NMFDeconv` starts its fit, in numpy: signatures checked against
the spots' genes, proportions by non-negative least squares on known signatures, or factors of
a scikit-learn NMF when the fit is reference-free."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy.optimize import nnls
from sklearn.decomposition import NMF

from .._rng import start_seed
from ._gene_advice import identifier_advice
from ._shared_genes import warn_few_shared
from ._validation import warn_user

#: A cell type whose signature over the spots' genes sums to at most this fraction of the
#: median type's is refused by check_signatures.
SILENT_TYPE = 1e-3


def check_signatures(signatures: pd.DataFrame, adata: AnnData, counted=None):
    """Signature names, values (cell types x used genes) and the used genes' columns in the
    spots: the spots' genes that have a signature, in the signatures' order, so that the
    model (an amortised encoder's first layer is drawn gene by gene) is the same for the same
    seed whatever the order of the spots' genes. ``counted`` (a callable giving which of the
    spots' genes some spot counts; ``None``: not read) leaves the others out, with a warning:
    a panel gene the platform never detects is no evidence of a spot's types, and read as a
    0 in every spot it drew the proportions towards the types that do not express it (mean
    TV to the truth 0.09 -> 0.22, per spot, with 10 such genes added to 50 of pseudo-spots
    of 4 types)."""
    if not isinstance(signatures, pd.DataFrame):
        raise ValueError("signatures must be a DataFrame: cell types x genes.")
    for axis, what, fix in (
        (signatures.index, "cell types", "sig.groupby(level=0).mean()"),
        (signatures.columns, "genes", "sig.loc[:, ~sig.columns.duplicated()]"),
    ):
        if not axis.is_unique:
            repeated = axis[axis.duplicated()].unique()[:3].tolist()
            raise ValueError(
                f"signatures repeat {what} (e.g. {repeated}); each must appear once, e.g. {fix}."
            )
    columns = adata.var_names.get_indexer(signatures.columns)
    columns = columns[columns >= 0]
    if len(columns) == 0:
        transposed = adata.var_names.isin(signatures.index).any()  # genes x types
        raise KeyError(
            f"signatures share no gene with the spots (signatures e.g. "
            f"{list(signatures.columns[:3])}, spots e.g. {list(adata.var_names[:3])}); "
            + (
                "their rows are the spots' genes: pass them as cell types x genes, "
                "signatures=sig.T."
                if transposed
                else identifier_advice(signatures.columns, adata.var_names)
            )
        )
    values = signatures[adata.var_names[columns]].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"signatures must be finite and non-negative (expected counts of one cell of each "
            f"type); {int(bad.sum())} values over the spots' genes are not, e.g. "
            f"{values[row, col]:.3g} for cell type {str(signatures.index[row])!r} and gene "
            f"{str(adata.var_names[columns[col]])!r}. "
            + (
                "Fill the missing ones, e.g. signatures.fillna(0), or drop those genes."
                if np.isnan(values).any()
                else "Pass signatures of raw counts, not of scaled or centred data."
            )
        )
    expressed = values.sum(axis=0) > 0
    if not expressed.any():
        raise ValueError("signatures are 0 in every gene the spots measure.")
    if not expressed.all():
        # No type can explain their counts: they skewed the proportions (TV 0.18 from 3 such
        # genes of 124 on hippocampus Visium). from_reference leaves them out the same way.
        silent_genes = adata.var_names[columns[~expressed]]
        warn_user(
            f"{len(silent_genes)} genes are 0 in every signature (e.g. "
            f"{silent_genes[:3].tolist()}): no cell type explains their counts, so the model "
            "leaves them out."
        )
        columns, values = columns[expressed], values[:, expressed]
    seen = None if counted is None else counted()[columns]
    if seen is not None and not seen.all():
        silent_genes = adata.var_names[columns[~seen]].tolist()
        if keep_uncounted(values, seen, signatures.index, silent_genes, "cell types"):
            seen[:] = True
        else:
            warn_user(
                f"{len(silent_genes)} of the {len(columns)} genes the model would read are 0 "
                f"in every spot (e.g. {silent_genes[:3]}): a gene no spot counts is no "
                "evidence of a spot's cell types, so the model leaves them out."
            )
        columns, values = columns[seen], values[:, seen]
    totals = values.sum(axis=1)
    silent = signatures.index[totals <= SILENT_TYPE * np.median(totals)]
    if len(silent):
        # Nothing in the spots can tell such a type's share: it took the prior's (15-19% of
        # every spot in a user's trial) from the types that are there.
        raise ValueError(
            f"Cell types {list(map(str, silent))} are (almost) silent in the {len(columns)} "
            "genes the spots measure, so their proportions cannot be estimated: they would take "
            "a share of every spot from the other types. Leave them out of the reference "
            f"(reference[~reference.obs[labels_key].isin({list(map(str, silent))})]) or the "
            "signatures, or measure genes they express."
        )
    shared = adata.var_names[columns]
    warn_few_shared(adata, signatures, shared, "proportions may be poorly determined")
    return [str(n) for n in signatures.index], values, columns


def keep_uncounted(values: np.ndarray, counted: np.ndarray, names, genes, what: str) -> bool:
    """Whether to keep the genes no spot counts (``~counted``, named ``genes``) of profiles
    ``values`` (rows named ``names``, ``what`` they are): when every gene is uncounted, or
    when leaving them out silences a profile (its total over the counted genes at most
    ``SILENT_TYPE`` of the median's, not so over all). Its zeros are then the only evidence
    that it is absent, and without them its share would be the prior's (warned)."""
    if not counted.any():
        return True  # no evidence either way: every spot's results are NaN rows
    totals, kept = values.sum(axis=1), values[:, counted].sum(axis=1)
    silenced = (kept <= SILENT_TYPE * np.median(kept)) & (totals > SILENT_TYPE * np.median(totals))
    if silenced.any():
        warn_user(
            f"{len(genes)} genes are 0 in every spot (e.g. {genes[:3]}); they are kept, as the "
            f"{what} {[str(n) for n in np.asarray(names)[silenced]][:5]} express (almost) "
            "nothing else the spots measure: their zeros say those are absent. Leave such "
            f"{what} out of the reference if the platform never detects these genes."
        )
    return bool(silenced.any())


def saved_columns(columns: np.ndarray, values: np.ndarray, saved: dict) -> tuple:
    """For a load: the ``columns`` and signature ``values`` of the genes the ``saved`` model
    reads (its ``gene_index``; all when it has none), as :func:`check_signatures` chose them
    then (genes no spot counted left out)."""
    index = saved.get("gene_index")
    if index is None:
        return columns, values
    keep = np.isin(columns, index.numpy())
    return columns[keep], values[:, keep]


def nnls_start(
    chunks: Iterable[np.ndarray], signatures: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of each type per spot by non-negative least squares: proportions and abundance.

    ``chunks`` yields the spots' counts (used genes) a block of rows at a time.
    """
    proportions, abundances = [], []
    fallback_scale = max(signatures.sum(axis=1).mean(), 1e-12)
    n_types = signatures.shape[0]
    for counts in chunks:
        cells = np.stack([nnls(signatures.T, row)[0] for row in counts])
        abundance = cells.sum(axis=1)
        proportions.append(
            np.where(
                abundance[:, None] > 0,
                cells / np.maximum(abundance, 1e-12)[:, None],
                1.0 / n_types,
            )
        )
        fallback = counts.sum(axis=1) / fallback_scale
        abundances.append(np.where(abundance > 0, abundance, fallback))
    return np.concatenate(proportions), np.concatenate(abundances)


def nmf_start(counts: np.ndarray, n_components: int, max_iter: int):
    """Factor names, signatures, proportions and abundance from a KL NMF of the counts."""
    nmf = NMF(
        n_components=n_components,
        init="nndsvda",
        beta_loss="kullback-leibler",
        solver="mu",
        max_iter=max_iter,
        random_state=start_seed(),  # NNDSVD's randomised SVD
    )
    with warnings.catch_warnings():
        # Convergence is not needed: NMF only gives the starting point.
        warnings.simplefilter("ignore", category=UserWarning)
        W = nmf.fit_transform(counts)
    H = nmf.components_
    # One "cell" of factor k is its profile scaled to an average spot's library.
    scale = counts.sum(axis=1).mean() / np.maximum(H.sum(axis=1), 1e-12)
    signatures = H * scale[:, None]
    cells = W / scale[None, :]
    abundance = cells.sum(axis=1)
    proportions = np.where(
        abundance[:, None] > 0,
        cells / np.maximum(abundance, 1e-12)[:, None],
        1.0 / n_components,
    )
    names = [f"factor_{k}" for k in range(n_components)]
    return names, signatures + 1e-6, proportions, np.maximum(abundance, 1e-3)


def saved_start(state: dict):
    """For a load: names, signatures, proportions and abundance of the saved parameters'
    shapes (the state dict then replaces them), instead of the NMF / NNLS start ``__init__``
    computes for a new model (see :mod:`deltavae.model._load_state`)."""
    signatures = torch.exp(state["log_signatures"].float()).numpy()
    proportions = abundance = None
    if "proportion_logits" in state:  # per spot
        proportions = torch.softmax(state["proportion_logits"].float(), dim=-1).numpy()
        abundance = torch.exp(state["log_abundance"].float()).numpy()
    names = [f"factor_{k}" for k in range(signatures.shape[0])]
    return names, signatures, proportions, abundance
