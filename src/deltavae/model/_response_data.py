"""The training cells' side of observed responses (:func:`deltavae.model._perturbation.
nearest_response`): their data on the scale where responses add, and the coordinates in which
the groups most similar to a cell are sought."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from .._warn import warn_user
from ._matrices import in_memory, row_sums

#: Cells x genes log-normalized at a time by :func:`additive_data`.
_LOG_BLOCK = 2**20


def additive_data(model, adata: AnnData) -> np.ndarray:
    """The data the model was set up on (its layer), dense float32; counts log-normalized."""
    return additive_data_and_library(model, adata)[0]


def additive_data_and_library(model, adata: AnnData) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`additive_data` and, for a count model, each cell's library size (its total
    count, float64; ``None`` otherwise) from the same read of the layer, for
    :func:`on_count_scale` (which read the layer again, from disk when it is backed)."""
    from ..metrics import log_normalize

    x = model.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
    x = in_memory(x)
    if model.module.likelihood not in ("zinb", "nb"):
        return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float32), None
    # A block of cells at a time into the float32 result: all at once, the float64 copy of
    # every cell and gene and its temporaries were 6 times it (the training cells, whole).
    x = sparse.csr_matrix(x) if sparse.issparse(x) else x
    out = np.empty(x.shape, dtype=np.float32)
    step = max(1, _LOG_BLOCK // max(x.shape[1], 1))
    for start in range(0, x.shape[0], step):
        out[start : start + step] = log_normalize(x[start : start + step])
    return out, row_sums(x)


def on_count_scale(model, adata: AnnData, log_pred: np.ndarray, draws=None, library=None):
    """A count model's prediction made on log-normalized counts (``log_pred``, the scale of
    :func:`additive_data`) on the scale of the cells' own counts, as ``translate`` and
    ``latent_shift`` give theirs: the expected counts at each cell's library size (the inverse
    of :func:`deltavae.metrics.log_normalize`: ``expm1(log_pred) * library / 1e4``, a cell
    without counts at a library of 1; not rescaled, so a cell's total is its library only
    where ``expm1(log_pred)`` sums to 10,000), and the layers ``{"log_normalized": log_pred}`` and,
    where ``draws`` (:class:`~deltavae.distributions._draws.CellDraws`) are given,
    ``"counts"``: the expectation rounded stochastically to whole counts. Concatenated with
    real counts, the prediction is normalized (``sc.pp.normalize_total``, ``log1p``) like them.
    ``library``: the cells' total counts where :func:`additive_data_and_library` gave them
    (the layer is then not read again); ``None`` reads them.

    Examples
    --------
    >>> class M:
    ...     def get_anndata_manager(self, adata, required):
    ...         return type("R", (), {"get_from_registry": lambda self, key: adata.X})()
    >>> cells = AnnData(np.array([[1.0, 3.0]]))
    >>> from deltavae.metrics import log_normalize
    >>> x, layers = on_count_scale(M(), cells, log_normalize(cells.X))
    >>> x.round(3).tolist(), sorted(layers)
    ([[1.0, 3.0]], ['log_normalized'])
    """
    import torch

    if library is None:
        registry = model.get_anndata_manager(adata, required=True)
        library = row_sums(registry.get_from_registry(REGISTRY_KEYS.X_KEY))
    library = np.maximum(library, 1.0)[:, None]
    expected = (np.expm1(np.asarray(log_pred, dtype=np.float64)) * (library / 1e4)).astype(
        np.float32
    )
    layers = {"log_normalized": np.asarray(log_pred, dtype=np.float32)}
    if draws is not None:
        counts = draws.round_counts(torch.as_tensor(expected), "nearest_response")
        layers = {"counts": counts.numpy().astype(np.float32), **layers}
    return expected, layers


#: How many times a gene's largest normalized value (in the training cells or the cell's own)
#: a count model's ``nearest_response`` predicts before it is said (:func:`warn_far_above`).
FAR_ABOVE = 20


def warn_far_above(model, log_pred, x_query, x_train, genes) -> None:
    """Warn, counting the cells, where a count model's ``nearest_response`` prediction
    (``log_pred``, log-normalized) is, in some gene, more than :data:`FAR_ABOVE` times (per
    10,000 counts) both the gene's largest value in the training cells (``x_train``) and the
    cell's own (``x_query``). A change added on log-normalized counts multiplies the cell's
    counts by its exponential: a group's change measured mostly on cells without the gene
    (ISG15 in Kang's control cells) multiplied the counts of a cell that had it already,
    3,232 ISG15 counts where no cell of the data has more than 383.

    Examples
    --------
    >>> from deltavae.metrics import log_normalize
    >>> train, query = log_normalize(np.array([[0.0, 9.0], [1.0, 9.0]])), np.zeros((1, 2))
    >>> warn_far_above(None, query + [[0.0, 1.0]], query, train, ["g0", "g1"])  # no word
    """
    reference = np.maximum(np.max(x_train, axis=0), x_query)  # both log-normalized
    ratio = np.expm1(log_pred) / np.maximum(np.expm1(reference), 1.0)  # per 10,000 counts
    far = ratio > FAR_ABOVE
    if not far.any():
        return
    cell, gene = np.unravel_index(np.argmax(ratio), ratio.shape)
    other = "method='translate' or 'latent_shift'"
    if "translate" not in getattr(model, "perturbation_methods", ()):
        other = "method='latent_shift'"
    n_genes = int(far.any(axis=0).sum())
    warn_user(
        f"nearest_response predicts {int(far.any(axis=1).sum())} of {len(far)} cells, in "
        f"{n_genes} gene{'s' * (n_genes != 1)}, more than {FAR_ABOVE} times the gene's largest "
        f"value in the training cells and in the cell itself, per 10,000 counts (e.g. "
        f"{genes[gene]}: {np.expm1(log_pred[cell, gene]):,.0f} against at most "
        f"{np.expm1(reference[cell, gene]):,.0f}). Each group's change is added on "
        "log-normalized counts, which multiplies the cell's counts by its exponential: a "
        "change measured mostly on cells without the gene multiplies the counts of a cell that "
        f"has it. Read those values as out of the data's range, or compare with {other}."
    )


_N_PCS = 50


def similarity_coordinates(model, train, x_train, similarity, batch_size):
    """Coordinates in which the nearest groups are sought: the training cells', and a function
    giving the coordinates of other cells (from their AnnData and additive data)."""
    if similarity == "latent":
        return (
            model.get_latent_representation(train, batch_size=batch_size),
            lambda adata, x: model.get_latent_representation(adata, batch_size=batch_size),
        )
    from sklearn.decomposition import PCA

    n_pcs = min(_N_PCS, x_train.shape[0] - 1, x_train.shape[1] - 1)
    if n_pcs < 1 or not np.ptp(x_train, axis=0).any():  # one gene, or all cells alike
        # No component tells groups apart (and none at all gave NaN weights): all equally near.
        return np.zeros((len(x_train), 1)), lambda adata, x: np.zeros((len(x), 1))
    pca = PCA(n_pcs, random_state=0).fit(x_train)
    return pca.transform(x_train), lambda adata, x: pca.transform(x)


def memoised(memo: dict | None, key, compute):
    """``compute()``, kept in ``memo`` under ``key`` when a memo is given."""
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]
