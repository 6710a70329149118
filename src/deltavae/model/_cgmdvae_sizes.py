"""The sizes :class:`deltavae.model.CGMDVAE` is built with, read from its arguments and the
registered cells: the number of clusters a labels column allows, ``n_latent="auto"`` and the
condition keys that hold one value."""

from __future__ import annotations

import numpy as np

from .._checks import short_repr
from ._load_state import saved_state
from ._validation import warn_user

#: Largest z that n_latent="auto" picks (it follows K, the number of clusters, up to here).
MAX_AUTO_LATENT = 64


def refuse_one_label(labels, n_clusters) -> None:
    """A labels column of one label with ``n_clusters`` left to its default (one cluster per
    label: a mixture of 1) is refused, naming ``n_clusters=2``."""
    if n_clusters is None and len(labels) == 1:
        raise ValueError(
            f"The labels hold one label ({labels[0]!r}), and n_clusters defaults to one "
            "cluster per label; a mixture needs 2 or more: pass n_clusters=2 (the label "
            "and the other cells) or more."
        )


def refuse_novel_clashes(labels, n_clusters: int, labels_key) -> None:
    """Labels named as the extra clusters (``novel_j``, one per cluster beyond the labels)
    are refused: the clusters had two of one name, and the read-outs failed after training
    (``Categorical categories must be unique``)."""
    novel = {f"novel_{j}" for j in range(n_clusters - len(labels))}
    clashes = [label for label in labels if label in novel]
    if clashes:
        raise ValueError(
            f"The labels in {labels_key!r} include {short_repr(clashes)}, the names of the "
            f"{n_clusters - len(labels)} clusters beyond the labels (novel_0, novel_1, ...): "
            f"rename those labels before setup_anndata, e.g. adata.obs[{labels_key!r}] = "
            f"adata.obs[{labels_key!r}].replace({{{clashes[0]!r}: 'new {clashes[0]}'}})."
        )


def latent_size(n_latent, n_clusters: int, is_count: bool, condition_keys) -> int:
    """``n_latent`` checked, or for ``"auto"`` 16 for counts without condition keys, else 10;
    K if larger, up to :data:`MAX_AUTO_LATENT`."""
    if n_latent == "auto":
        wide = is_count and not condition_keys
        return max(16 if wide else 10, min(n_clusters, MAX_AUTO_LATENT))
    if not isinstance(n_latent, (int, np.integer)) or n_latent < 1:
        raise ValueError(f"n_latent must be a positive integer or 'auto', got {n_latent!r}.")
    return n_latent


def warn_one_value_conditions(keys, n_cats_per_cov, model=None, adata=None) -> None:
    """A condition key of one value: no condition effect to learn, nothing to translate to.

    With ``adata`` (the cells a new ``model`` is built on), the values its cells carry are
    counted, not the column's categories: a column of one value and unused categories (a
    pandas Categorical of more categories than its cells hold) learns no condition effect
    either, and the read-outs refuse those categories. A ``load`` builds the model on whatever
    cells it reads (the trained categories are the registry's), so it counts the categories.

    Examples
    --------
    >>> import pandas as pd
    >>> from anndata import AnnData
    >>> obs = pd.DataFrame({"c": pd.Categorical(["a", "a"], ["a", "b"])}, index=["x", "y"])
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as said:
    ...     warnings.simplefilter("always")
    ...     warn_one_value_conditions(["c"], [2], adata=AnnData(obs=obs))
    >>> "'c' holds one value" in str(said[0].message)
    True
    """
    counting = adata is not None and (model is None or saved_state(model) is None)
    for key, n_cats in zip(keys, n_cats_per_cov, strict=True):
        n_held = adata.obs[key].nunique() if counting else n_cats
        if n_held == 1:
            warn_user(
                f"condition_key {key!r} holds one value: the model learns no condition "
                "effect, and translate has no other condition to move cells into. To compare "
                "conditions, set up the cells of all of them together; a condition mapped "
                "onto the model later (load_query_data) is learned from its query alone, and "
                "translate predicts little of the change into it."
            )
