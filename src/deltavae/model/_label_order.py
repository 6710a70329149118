"""Whether CGMDVAE's label and cluster columns are ordered: as the user's labels column.

An ordered labels column (stages, grades, doses as cell states) gave written cluster and
label columns that were unordered: ``adata.obs["cgmdvae_cluster"] < "late"`` raised, and
``sort_values`` sorted by name. The labels keep their column's order in the model's
registry (``LabelsInColumnOrder``); the flag is kept in ``labels_ordered_`` (at each fit and
save, saved with the model and passed on to its query models, whose query seldom holds the
labels column), or read from the model's AnnData's labels column.

One rule for the categories of the categorical columns CGMDVAE's read-outs give
(``predict_labels``' ``label``, ``write_to_adata``'s cluster and label columns, ``sample``'s
cluster, labels and condition columns), :func:`kept_categories`: an ordered column keeps its
whole scale, every label in order (and the unlabelled mark where the read-out can give it:
``unknown_below``, a sampled novel cluster's cells), so that ``anndata.concat`` of two
outputs (two queries written, sampled cells beside real ones) keeps it one ordered column
(it made ``object`` of ordered columns whose categories differ, where ``<`` and sorting
follow the names); an unordered column holds the categories some cell holds alone, since
``sc.tl.rank_genes_groups`` refuses an empty group and legends list it.
"""

from __future__ import annotations

import pandas as pd


def labels_ordered(model) -> bool:
    """``True`` where the model's labels column is an ordered categorical: as recorded
    (``labels_ordered_``, a query model's its reference's) or as the model's AnnData holds
    it now; ``False`` for a model without labels."""
    labels_key = model.registry_["setup_args"].get("labels_key")
    if labels_key is None:
        return False
    if getattr(model, "labels_ordered_", False):
        return True
    adata = getattr(model, "adata", None)
    column = None if adata is None else adata.obs.get(labels_key)
    return isinstance(getattr(column, "dtype", None), pd.CategoricalDtype) and bool(
        column.cat.ordered
    )


def record_labels_ordered(model) -> None:
    """Keep :func:`labels_ordered` in ``labels_ordered_`` (a model with labels only), so that
    the model saved, loaded onto cells without the column, or a query model built from it
    writes its columns ordered as the labels were."""
    if getattr(model, "registry_", None) is None:
        return
    if model.registry_["setup_args"].get("labels_key") is not None:
        model.labels_ordered_ = labels_ordered(model)


def ordered_as_labels(model, column: pd.Categorical, labels_only: bool = True) -> pd.Categorical:
    """``column`` (categories in the model's label order) ordered where the labels are
    (:func:`labels_ordered`) and, with ``labels_only``, where its categories are the labels
    alone (not beside ``novel_j`` clusters, which have no place among them)."""
    if not labels_ordered(model):
        return column
    if labels_only and len(model.label_names) != len(model.cluster_names):
        return column
    return column.as_ordered()


def kept_categories(column: pd.Categorical) -> pd.Categorical:
    """``column`` with the categories the read-outs keep (see the module docstring): all of
    an ordered one's, an unordered one's that some cell holds.

    Examples
    --------
    >>> scale = pd.Categorical(["b"], categories=["a", "b", "c"], ordered=True)
    >>> list(kept_categories(scale).categories)
    ['a', 'b', 'c']
    >>> list(kept_categories(scale.as_unordered()).categories)
    ['b']
    """
    return column if column.ordered else column.remove_unused_categories()
