"""The labels a spot model built from a reference reads, checked before any of the
reference's counts are: a missing column (or spots and reference passed the other way round,
as Tangram's ``pp_adatas(adata_sc, adata_sp)`` takes the single cells first), NaN labels,
one type. The counts' checks read a reference on disk a chunk of rows at a time, and said
their warnings before a labels_key typo was refused."""

from __future__ import annotations

from anndata import AnnData

from .._checks import check_labels, no_column


def check_reference_labels(spots, reference: AnnData, labels_key: str, call: str) -> None:
    """Refuse ``reference.obs[labels_key]`` as :func:`~deltavae._checks.check_labels` does;
    where ``reference.obs`` lacks the column and ``spots.obs`` holds it, ask whether the
    two were swapped, with ``call`` written the right way round.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> obs = pd.DataFrame({"cell_type": ["B", "T"]}, index=["c1", "c2"])
    >>> cells = ad.AnnData(np.ones((2, 1)), obs=obs)
    >>> spots = ad.AnnData(np.ones((2, 1)))
    >>> try:
    ...     check_reference_labels(cells, spots, "cell_type", "NMFDeconv.from_reference")
    ... except KeyError as err:
    ...     print(err.args[0])  # doctest: +NORMALIZE_WHITESPACE
    labels_key='cell_type' is not a column of reference.obs; available columns: []. spots.obs
    holds 'cell_type': were the single cells passed as spots? The spots come first, the
    labelled cells are reference=: NMFDeconv.from_reference(spots, reference=cells,
    labels_key='cell_type').
    """
    if labels_key not in reference.obs and labels_key in getattr(spots, "obs", {}):
        raise KeyError(
            no_column("labels_key", labels_key, reference.obs, "reference.obs")
            + f" spots.obs holds {labels_key!r}: were the single cells passed as spots? The "
            f"spots come first, the labelled cells are reference=: {call}(spots, "
            f"reference=cells, labels_key={labels_key!r})."
        )
    check_labels(reference, labels_key)
