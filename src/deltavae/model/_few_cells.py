"""What setup says of categories with fewer than 3 cells (scvi-tools' warning, renamed), of
categories no cell carries, and of categories that are one name typed two ways ('ctrl' and
'Ctrl ', each trained as a condition of its own).

A condition or a fully labelled column's category of one or two cells trains little of
itself. A semi-supervised labels column is another matter: one labelled cell per type is
how few-label training is meant to be used (scANVI's tutorials label a handful of cells).
Its unlabelled cells teach each label's component what the type looks like; the labelled
cells name the components and the start's clusters (train/_label_space.py). What can go
wrong is the naming: a lone labelled cell on the edge of its type can name another type's
cluster. Setup says that, and how to check it, instead of advising to drop or unlabel the
only labelled cells.
"""

from __future__ import annotations

import pandas as pd
from anndata import AnnData

from .._lookalike_names import warn_lookalike_names
from ._validation import warn_user

#: Fewest cells (or spots) a category holds without a warning: scvi-tools' own bound at setup,
#: whose warning this module says in the user's words; the read-outs that take a group's
#: mean (differential expression, latent_shift, differential_abundance) warn below it too.
FEW_CELLS = 3


def warn_lookalike_categories_at_setup(adata: AnnData, columns: list[str], unlabelled: dict):
    """Warn of the values of each of ``columns`` (obs keys) that differ only in case, spaces
    or number format ('ctrl' and 'Ctrl ', 'B cell' and 'B cell '): scvi-tools registers each
    as a category of its own, so the model learns a condition effect, a batch or a cell type
    between two names of one. ``unlabelled`` maps a labels column to its unlabelled mark,
    left out (its look-alikes are ``warn_if_unlabelled_lookalike``'s)."""
    for key in columns:
        kind = (
            "a cell type of its own, with its own cluster"
            if key in unlabelled
            else "a category of its own, which the model learns apart from the other"
        )
        warn_lookalike_names(
            adata.obs[key], f"adata.obs[{key!r}]", kind, "setup_anndata", unlabelled.get(key)
        )


def _few(adata: AnnData, key: str, mark=None) -> str | None:
    """``adata.obs[key]``'s categories of fewer than 3 cells (the cells marked ``mark`` left
    out), listed with their counts (the first 5); None where there are none."""
    values = adata.obs[key].astype(str)
    if mark is not None:
        values = values[values != str(mark)]
    counts = values.value_counts()
    few = counts[counts < FEW_CELLS]
    if not len(few):
        return None
    return f"adata.obs[{key!r}]: " + ", ".join(f"{v!r} ({n})" for v, n in list(few.items())[:5])


def warn_unused_categories(adata: AnnData, columns: list[str]) -> None:
    """Warn of the categories of ``columns`` (obs keys of conditions, batches, covariates; not
    labels, which ``check_label_setup`` names) that no cell carries: the unused categories of
    a pandas Categorical, as ``adata[mask]`` keeps them. scvi-tools registers each as a
    condition, so the networks grow a column no cell trains (another model than one set up
    on the same cells without them), and the read-outs refuse it; one warning per column, with
    the line that drops them.

    Examples
    --------
    >>> obs = pd.DataFrame({"b": pd.Categorical(["x", "y"])}, index=["c1", "c2"])
    >>> warn_unused_categories(AnnData(obs=obs), ["b"])  # every category held: no warning
    """
    for key in columns:
        column = adata.obs[key]
        if not isinstance(column.dtype, pd.CategoricalDtype):
            continue
        categories = column.cat.categories
        unused = categories[~categories.isin(column.unique())]
        if not len(unused):
            continue
        col = f"adata.obs[{key!r}]"
        warn_user(
            f"{col} has categories no cell carries ({list(map(str, unused[:5]))}): each is "
            "registered as a category of its own that no cell trains, so the model's networks "
            "grow a column for it (another model, with other results, than one set up on the "
            "same cells without it) and its read-outs refuse it. Drop them before "
            f"setup_anndata: {col} = {col}.cat.remove_unused_categories()."
        )


def warn_few_cells(
    adata: AnnData, columns: list[str], unlabelled: dict, unit: str = "cell", unused: bool = True
) -> None:
    """Warn of the categories of ``columns`` (obs keys) with fewer than 3 cells (``unit``:
    "spot" for a spot model's samples); ``unlabelled`` maps a labels column to its unlabelled
    mark. A labels column that holds unlabelled cells (semi-supervised) is told what few
    labelled cells mean and how to check them; the other columns that their categories train
    little and how to merge, drop or unlabel them. The other columns' categories without cells
    are named too (:func:`warn_unused_categories`; not where ``unused`` is False), and so are
    the categories that are one name typed two ways
    (:func:`warn_lookalike_categories_at_setup`)."""
    warn_lookalike_categories_at_setup(adata, columns, unlabelled)
    if unused:
        warn_unused_categories(adata, [key for key in columns if key not in unlabelled])
    small, semi = [], []
    for key in columns:
        mark = unlabelled.get(key)
        entry = _few(adata, key, mark)
        if entry is None:
            continue
        held = key in unlabelled and adata.obs[key].astype(str).eq(str(mark)).any()
        (semi if held else small).append((key, entry))
    if semi:
        warn_user(
            f"Labels with fewer than {FEW_CELLS} cells labelled ({semi[0][1]}): few-label training "
            "learns each type from the unlabelled cells like its labelled ones, which name "
            "its cluster, and a labelled cell on the edge of its type may name another's. "
            "Check the names (model.predict()) and label a few more cells of a type named "
            "wrong."
        )
    if not small:
        return
    unlabel = ""
    labels = [key for key, _ in small if key in unlabelled]
    if labels:
        # A supervised column: its mark is one no cell carries, to be named unless the default.
        mark = unlabelled[labels[0]]
        named = "" if mark == "Unknown" else f" and pass unlabeled_category={mark!r}"
        unlabel = (
            f", or, for adata.obs[{labels[0]!r}], relabel those cells {mark!r}{named} "
            "(unlabelled: they still train, and the model predicts their label)"
        )
    warn_user(
        f"Categories with fewer than {FEW_CELLS} {unit}s ({'; '.join(e for _, e in small)}): "
        "the model learns little of them; merge them into another category or drop those "
        f"{unit}s{unlabel}."
    )
