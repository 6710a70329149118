"""Which labels held labelled training cells, fit after fit (``trained_labels_``), the
warning of labels none of whose labelled cells trained, and that of observed responses grouped
by predicted clusters where the model's AnnData holds no labelled cell (CGMDVAE)."""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS

from ._labels import labels_of
from ._validation import warn_user


def _label_codes(model) -> np.ndarray:
    return np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()


def record_trained_labels(model, held_out=None) -> None:
    """At the start of a fit: keep, in ``trained_labels_`` (saved with the model), the labels
    whose labelled cells are among this fit's training cells (not the validation or test
    split's, the positions ``held_out``, which give no gradient), joined to those of earlier
    fits, as ``trained_categories_`` keeps the conditions, each as :meth:`predict` gives it
    (integer labels as integers); and, for this fit's warning
    (:func:`warn_labels_without_training_cells`), those of the earlier fits alone."""
    names = getattr(model, "label_names", None)
    if not names or getattr(model, "adata_manager", None) is None:
        return
    # Compared as text: a model saved before kept integer labels as strings.
    before = {str(n) for n in getattr(model, "trained_labels_", None) or []}
    model._labels_trained_before = before
    codes = _label_codes(model)
    if held_out is not None and len(held_out):
        codes = np.delete(codes, np.asarray(held_out, dtype=int))
    here = {names[c] for c in np.unique(codes) if 0 <= c < len(names)}  # not the unlabelled
    # Each label as predict gives it: integer labels as integers (strings beside novel_j).
    shown = labels_of(model, np.array([], dtype=int)).categories.tolist()[: len(names)]
    model.trained_labels_ = [v for n, v in zip(names, shown, strict=True) if n in here | before]


def warn_labels_without_training_cells(model) -> None:
    """Warn of labels none of whose labelled cells trained (all in the validation or test
    split: a label of a cell or two), in this fit or an earlier one (as conditions are
    warned of): their clusters keep the label's name but learned no cell of it, and cells
    predicted as the label were not matched to it."""
    cells = getattr(model, "train_indices", None)
    if not model.label_names or model.is_query_model or cells is None:
        return
    codes = _label_codes(model)
    trained = np.bincount(codes[np.asarray(cells, dtype=int)], minlength=len(model.label_names))
    before = getattr(model, "_labels_trained_before", None) or set()  # an earlier fit's
    # A label no cell carries (an unused category, warned of by setup_anndata) has no cell
    # that fell in a split: "theirs all fell in the validation split" was untrue of it.
    held = np.bincount(codes, minlength=len(model.label_names))
    untrained = [
        n
        for n, k, h in zip(model.label_names, trained, held, strict=False)
        if not k and h and n not in before
    ]
    if untrained:
        count = {n: int(held[model.label_names.index(n)]) for n in untrained}
        shown = ", ".join(f"{n!r} ({k} cell{'s' * (k != 1)})" for n, k in count.items())
        warn_user(
            f"No labelled cell of {shown[:300]} trained: theirs all fell in the validation (or "
            "test) split. Their clusters keep those names but learned no cell of them, so "
            "cells predicted as them are guesses. Label more cells of them, or train with "
            "train_size=1 (or validation cells that leave one of each in training)."
        )


def warn_labels_no_cell_carries(model, clusters) -> None:
    """Warn of cells predicted (``clusters``, every cell's) as labels no cell of the model's
    AnnData carries (unused categories of its labels column, warned of at setup): their
    clusters learned no labelled cell, so those cells are a cluster named by the column's
    order alone (pbmc3k, 5% labelled, no NK labelled and 'DC' an unused category: 57 of 800
    cells predicted 'DC'), which :meth:`predict` gave back as if matched to the label."""
    names = getattr(model, "label_names", None)
    if not names or model.is_query_model or getattr(model, "adata_manager", None) is None:
        return
    held = np.bincount(_label_codes(model), minlength=len(names))[: len(names)]
    sizes = np.bincount(np.asarray(clusters, dtype=int), minlength=len(names))[: len(names)]
    named = [(n, int(s)) for n, h, s in zip(names, held, sizes, strict=True) if not h and s]
    if not named:
        return
    key = model.registry_["setup_args"]["labels_key"]
    shown = ", ".join(
        f"{s} cell{'s are' if s != 1 else ' is'} predicted as {n!r}" for n, s in named
    )
    warn_user(
        f"{shown[:300]}: a label no cell of adata.obs[{key!r}] carries (an unused category), "
        "whose cluster learned no labelled cell, so those cells are a cluster given that name "
        "by the column's order, not cells matched to the label. Label some of its cells, or "
        f"drop it before setup_anndata: adata.obs[{key!r}] = adata.obs[{key!r}]"
        ".cat.remove_unused_categories()."
    )


def warn_predicted_groups(model, train) -> None:
    """Where the observed responses (``nearest_response`` without ``balance_key``, and
    ``translate``'s ``response_weight``) group the training cells by their predicted clusters
    although the model trained with labels: a model that is not a query model and whose
    AnnData holds no labelled cell (loaded onto one without its labels column, every cell
    read as unlabelled). Said once for each AnnData the model reads (``load`` said only that
    the cells were read as unlabelled)."""
    names = getattr(model, "label_names", None)
    if not names or model.is_query_model or not getattr(model, "trained_labels_", None):
        return
    key = model.registry_["setup_args"]["labels_key"]
    if train.obs[key].astype(str).isin([str(n) for n in names]).any():
        return  # a label's cells give its response, as in training
    uuid = model.adata_manager.adata_uuid
    if model.__dict__.get("_said_predicted_groups") == uuid:
        return
    model._said_predicted_groups = uuid
    warn_user(
        f"The model trained with the labels of obs[{key!r}], but its AnnData holds no labelled "
        "cell (loaded onto one without that column: every cell read as unlabelled), so the "
        "observed responses (nearest_response, translate's response_weight) group its cells "
        "by their predicted clusters, not by the labels given in training. To group them by "
        "the labels, load the model with its labelled AnnData (or add the column), or pass "
        "balance_key, an obs column of the model's AnnData holding the groups."
    )
