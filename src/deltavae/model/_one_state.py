"""Whether spots show any structure beyond counting noise, for :class:`Archetypes`: on spots of
one state (homogeneous tissue), archetypes split noise, about evenly, and point in unrelated
directions, so neither their merging nor their thinness says so."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import svds

from ._validation import warn_user

#: Spots and genes (the most counted) the check reads.
_SPOTS, _GENES = 500, 500
#: Largest eigenvalue within this factor of the noise edge: no structure.
_MARGIN = 1.3


def noise_spectrum(counts: np.ndarray) -> list[float] | None:
    """Largest eigenvalue of the genes' correlation of Pearson residuals (Poisson, each spot's
    depth) of ``counts`` (spots x genes), and the edge that independent noise reaches in as
    many spots and genes, ``(1 + sqrt(genes / spots))**2`` (Marchenko-Pastur); ``None`` with
    too few spots or genes to tell.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> top, edge = noise_spectrum(rng.poisson(5.0, (300, 50)).astype(float))
    >>> bool(top < 1.3 * edge)
    True
    """
    genes = np.argsort(-counts.sum(axis=0))[:_GENES]
    counts = counts[:, genes[counts[:, genes].sum(axis=0) > 0]]
    # Spots without counts in these genes (a spot of a few counts, all in other genes) have
    # no expected value to scale their residuals by: left out after the genes are chosen.
    counts = counts[counts.sum(axis=1) > 0]
    n_spots, n_genes = counts.shape
    if n_spots < 20 or n_genes < 10:
        return None
    expected = counts.sum(1, keepdims=True) * (counts.sum(0) / counts.sum())
    residuals = (counts - expected) / np.sqrt(expected)
    residuals -= residuals.mean(axis=0)
    sd = residuals.std(axis=0)
    residuals = residuals[:, sd > 0] / sd[sd > 0]
    top = float(svds(residuals, k=1, return_singular_vectors=False)[0] ** 2 / n_spots)
    return [top, float((1 + np.sqrt(residuals.shape[1] / n_spots)) ** 2)]


def spots_sample_spectrum(model) -> list[float] | None:
    """:func:`noise_spectrum` of up to 500 random spots of ``model``'s AnnData."""
    return noise_spectrum(model._read_rows(model._sample_rows(_SPOTS), dtype=np.float32))


def warn_one_state(check: list[float] | None, n_archetypes: int) -> None:
    """Warn when ``check`` (:func:`noise_spectrum`) finds no structure beyond noise."""
    if check is None or check[0] > _MARGIN * check[1]:
        return
    warn_user(
        f"The spots show no structure beyond counting noise (largest eigenvalue of their "
        f"genes' correlation of Pearson residuals {check[0]:.2f}, where independent noise "
        f"reaches {check[1]:.2f}): they look like one state, and the {n_archetypes} "
        "archetypes split noise among them (their weights, anchors and markers describe no "
        "states). Check known markers of the states you expect before reading them."
    )
