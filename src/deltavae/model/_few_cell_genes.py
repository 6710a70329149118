"""SpatialImputer's note on genes its reference counts in only a handful of cells.

Such a gene's reference profiles rest on those few cells' counts: imputed, it came out about
the same small value in every spot (0.03 to 0.06 on the lymph-node pair below), without a
word, as if imputed like any other. Measured on the lymph-node Visium pair of
/work/shared/data (rctd_spatial_reference_pairs: 1,000 spots, a reference of 330 cells):
the 295 shared genes the reference counts in fewer than 20 cells, and 120 others, held out of
the spots, the rest fitted (200 epochs, neighbour profiles), each held-out gene's imputation
against its real spot counts. Median Pearson correlation by the number of reference cells
counting the gene: 0.02-0.09 for 1 to 4 cells (42 genes), 0.13-0.17 for 5 to 8, 0.18 for 10
to 19, 0.29, 0.39 and 0.53 for 20-49, 50-99 and 100 or more; and their imputed mean was 0.11
to 2.1 times the spots' (interquartile 0.38-2.1; 0.66-1.3 for genes counted in 20 or more
cells). Among genes the spots count as rarely (a mean below 0.1 a spot), those counted in 1
to 3 reference cells correlated 0.015, those in 4 to 9 cells 0.085: the handful of cells,
not the gene's rarity in the spots, leaves nothing to impute from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._checks import short_repr
from .._warn import warn_user

#: Fewest reference cells counting a gene for its imputation to be read without a note.
MIN_REFERENCE_CELLS = 5

#: The start of impute's note, which cross_validate's folds leave out: it says its own, of
#: the genes scored, once (``warn_few_cell_scores``).
FEW_CELLS_NOTE = r"\d+ of the \d+ genes imputed are counted in fewer than"


def record_few_cell_genes(model, counting: np.ndarray, genes, n_cells: int) -> None:
    """Keep on ``model`` (saved with it) the genes its reference counts in 1 to
    ``MIN_REFERENCE_CELLS - 1`` of its ``n_cells`` cells (``counting``: for each of
    ``genes``), for :func:`warn_few_cell_genes`; genes counted in none are said apart
    (``warn_silent_genes``)."""
    counting = np.asarray(counting)
    few = (counting > 0) & (counting < MIN_REFERENCE_CELLS)
    model.few_cell_genes_ = pd.Series(counting[few], index=pd.Index(genes)[few], dtype=np.int64)
    model.reference_n_cells_ = int(n_cells)


def warn_few_cell_genes(model, chosen: pd.Index, named: bool, layer: str | None) -> None:
    """Say which of the genes ``chosen`` to impute the reference counts in only a handful of
    cells (:func:`record_few_cell_genes`; nothing for a model saved before it was kept), and
    what to make of them. ``named``: ``genes=`` named them; ``layer``: the reference's layer,
    which the statement that drops them reads."""
    few = getattr(model, "few_cell_genes_", None)
    if few is None or not len(few):
        return
    found = few[few.index.isin(chosen)]
    if not len(found):
        return
    fix = (
        "leave them out of genes="
        if named
        else "to leave them out of impute(), drop them from the reference before "
        f"from_reference: {_drop_statement(layer)}"
    )
    opening = _few_of(found.index, len(chosen), "imputed", model.reference_n_cells_, found.iloc[0])
    warn_user(
        f"{opening}. Their imputed values rest on those few cells' counts, about one small "
        "value in every spot, not an estimate of where the gene is expressed (on a lymph-node "
        "Visium pair, such genes held out of the spots correlated 0.02-0.09 with their real "
        "counts, genes counted in 20 or more cells 0.3-0.5). Read them as unreliable, or impute "
        "them from a reference that counts them in more cells; " + fix + "."
    )


def warn_few_cell_scores(
    scores: pd.DataFrame, counting: pd.Series, n_cells: int, layer: str | None
) -> None:
    """Say which of the genes ``scores`` (cross_validate's table) holds the reference counts
    in only a handful of its ``n_cells`` cells (``counting``: cells counting each gene, by
    name), with their median PCC against the other genes': part of the low scores is the
    reference's coverage, not the model. ``layer``: the reference's, which the statement that
    drops them reads."""
    cells = counting.reindex(scores.index).to_numpy()
    few = cells < MIN_REFERENCE_CELLS
    if not few.any():
        return
    names = scores.index[few]
    pcc = scores["pcc"].to_numpy(dtype=float)
    theirs = _median(pcc[few])
    others = (
        f"against {_median(pcc[~few])} for the {int((~few).sum())} others"
        if (~few).any()
        else "(every gene scored is such)"
    )
    opening = _few_of(names, len(scores), "scored", n_cells, int(cells[few][0]))
    warn_user(
        f"{opening}: their median PCC is {theirs}, {others}. Their imputations rest on those "
        "few cells' counts, so their scores measure the reference's coverage more than the "
        "model (on a lymph-node Visium pair, such genes correlated 0.02-0.09 with their real "
        "counts, genes counted in 20 or more cells 0.3-0.5), and a median over every gene counts "
        "them with the rest. To score the model on the genes it can impute, drop them from the "
        f"reference before cross_validate ({_drop_statement(layer)}), or leave them out of "
        "genes=."
    )


def _few_of(names: pd.Index, total: int, done: str, n_cells: int, first_count: int) -> str:
    """The opening of both notes: how many of the ``total`` genes ``done`` (imputed, scored)
    the reference counts in too few of its ``n_cells`` cells, which, and the first's count."""
    return (
        f"{len(names)} of the {total} genes {done} are counted in fewer than "
        f"{MIN_REFERENCE_CELLS} of the reference's {n_cells} cells "
        f"({short_repr(names.tolist(), n=10)}; {names[0]!r} in {first_count})"
    )


def _median(values: np.ndarray) -> str:
    """The median of the scores defined (a constant prediction's are NaN), to 2 decimals."""
    defined = values[~np.isnan(values)]
    return f"{np.median(defined):.2f}" if len(defined) else "undefined"


def _drop_statement(layer: str | None) -> str:
    """The statement that drops the reference's genes counted in too few cells (in
    ``layer``; ``None``: X).

    Examples
    --------
    >>> _drop_statement(None)
    'sc.pp.filter_genes(reference, min_cells=5)'
    """
    if layer is None:
        return f"sc.pp.filter_genes(reference, min_cells={MIN_REFERENCE_CELLS})"
    counted = f"np.asarray((reference.layers[{layer!r}] > 0).sum(0)).ravel()"
    return f"reference = reference[:, {counted} >= {MIN_REFERENCE_CELLS}].copy()"
