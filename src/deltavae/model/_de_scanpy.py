"""scvi-tools' differential expression table written into ``adata.uns`` in the layout of
:func:`scanpy.tl.rank_genes_groups`, so that scanpy's displays (``sc.pl.rank_genes_groups``,
its dotplot and heatmap, ``sc.get.rank_genes_groups_df``) read it unchanged. scvi-tools 1.4
has no such converter: its tables and scanpy's record arrays did not meet."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
from anndata import AnnData

#: The column scvi-tools ranks each comparison's rows by, per ``mode``; scanpy's ``scores``.
RANKED_BY = {"change": "proba_de", "vanilla": "bayes_factor"}

#: What scanpy's rank_genes_groups writes beside ``params``: one field per group each.
_FIELDS = ("names", "scores", "pvals", "pvals_adj", "logfoldchanges")

RANK_KEY_NOTE = (
    "key_added\n"
    "    Also write the table into ``adata.uns[key_added]`` (of ``adata``, else of the model's"
    " AnnData) in :func:`scanpy.tl.rank_genes_groups`' layout, for ``sc.pl.rank_genes_groups"
    "(adata, key=key_added)``, its ``_dotplot`` and ``_heatmap``, and ``sc.get."
    "rank_genes_groups_df``, which lists each group's genes in this table's order. ``scores``"
    ' holds the column the rows are ranked by: ``proba_de`` (``mode="change"``; it ranks'
    ' down-regulated genes among the first too: ``values_to_plot="logfoldchanges"`` shows'
    ' the direction) or ``bayes_factor`` (``"vanilla"``); ``logfoldchanges`` ``lfc_mean``'
    " (change) or ``log2(scale1 / scale2)`` (vanilla). These are not tests: ``pvals`` and"
    " ``pvals_adj`` are NaN (``pval_cutoff`` keeps no gene). ``pts`` and, against the rest,"
    " ``pts_rest`` hold the shares of cells with a non-zero count (scvi-tools'"
    " ``non_zeros_proportion1``/``2``), as ``rank_genes_groups(pts=True)`` writes them:"
    " ``sc.get.rank_genes_groups_df`` lists them as ``pct_nz_group``/``pct_nz_reference``"
    " and ``sc.tl.filter_rank_genes_groups`` reads them. Needs ``groupby``; groups against"
    ' the rest (``reference="rest"``) or against ``group2`` (its ``reference``). As scanpy,'
    " a previous rank_genes_groups result under that key is replaced; any other entry there"
    " is refused. Default ``None``: nothing is written.\n"
)

#: The docstring's example: scanpy's displays of the model's clusters' markers.
RANK_KEY_EXAMPLE = """
Examples
--------
>>> de = model.differential_expression(  # doctest: +SKIP
...     groupby="cgmdvae_cluster", key_added="rank_genes_groups"
... )
>>> sc.pl.rank_genes_groups_dotplot(adata, n_genes=4)  # doctest: +SKIP
>>> sc.get.rank_genes_groups_df(adata, None).head()  # doctest: +SKIP
"""


def _is_rank_layout(entry) -> bool:
    return isinstance(entry, dict) and "params" in entry and "names" in entry


def check_rank_key(adata: AnnData, key_added, groupby, given_adata: bool) -> None:
    """Before any draw: ``key_added`` names an ``uns`` entry of ``adata`` (the AnnData the
    call reads) that ``write_rank_genes_groups`` may write."""
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(
            f"key_added={key_added!r}: pass the adata.uns key to write scanpy's "
            'rank_genes_groups layout under, a name without "/", e.g. "rank_genes_groups".'
        )
    if groupby is None:
        raise ValueError(
            "key_added writes scanpy's rank_genes_groups layout, whose groups are the "
            "categories of an obs column: pass groupby= (with group1/group2), not idx1/idx2."
        )
    where = "adata" if given_adata else "model.adata"
    if adata.is_view:
        raise ValueError(
            f"{where} is a view, whose uns would be copied away from its parent: pass "
            f"{where}.copy() (with groupby's column) to write key_added={key_added!r} into."
        )
    held = adata.uns.get(key_added)
    if held is not None and not _is_rank_layout(held):
        raise ValueError(
            f"{where}.uns[{key_added!r}] holds a {type(held).__name__}, not a "
            "rank_genes_groups result, and would be overwritten: choose another key_added."
        )


def rank_genes_groups_layout(de: pd.DataFrame, groupby: str, reference) -> dict:
    """``de``, a table of scvi-tools' ``differential_expression`` (one block of rows per
    ``group1``, in its ranking's order), as :func:`scanpy.tl.rank_genes_groups` lays its
    result out: ``params`` and record arrays of one field per group (its name as a string),
    the genes in the table's order. ``reference``: ``group2``, or ``None`` for the rest.

    Examples
    --------
    >>> de = pd.DataFrame(
    ...     {"bayes_factor": [2.0, 1.0, 3.0, -1.0], "scale1": [0.4, 0.1, 0.6, 0.1],
    ...      "scale2": [0.1, 0.1, 0.2, 0.4], "group1": ["a", "a", "b", "b"]},
    ...     index=["g1", "g2", "g2", "g1"])
    >>> layout = rank_genes_groups_layout(de, "cluster", None)
    >>> list(layout["names"]["b"]), layout["params"]["reference"]
    (['g2', 'g1'], 'rest')
    """
    mode = "change" if RANKED_BY["change"] in de else "vanilla"
    groups = pd.unique(de["group1"])
    columns: dict[str, list[np.ndarray]] = {field: [] for field in _FIELDS}
    for group in groups:
        rows = de[(de["group1"] == group).to_numpy()]
        if mode == "change":
            lfc = rows["lfc_mean"].to_numpy()
        else:
            lfc = np.log2(rows["scale1"].to_numpy() / rows["scale2"].to_numpy())
        nan = np.full(len(rows), np.nan)
        columns["names"].append(np.asarray(rows.index, dtype=object))
        columns["scores"].append(rows[RANKED_BY[mode]].to_numpy(np.float32))
        columns["pvals"].append(nan)
        columns["pvals_adj"].append(nan.copy())
        columns["logfoldchanges"].append(lfc.astype(np.float32))
    names = [str(group) for group in groups]
    layout: dict = {
        "params": {  # the keys and types scanpy writes; layer None as anndata stores it
            "groupby": groupby,
            "reference": "rest" if reference is None else str(reference),
            "method": f"scvi-tools differential_expression (mode={mode!r})",
            "use_raw": False,
            "layer": None,
            "corr_method": "none",
        }
    }
    for field in _FIELDS:
        layout[field] = np.rec.fromarrays(columns[field], names=names)
    layout.update(_fractions(de, groups, names, reference))
    return layout


#: scvi-tools' columns of the share of cells with a non-zero count, in each group and in
#: what it is compared with: scanpy's ``pts`` and ``pts_rest`` (rank_genes_groups(pts=True)).
_NON_ZEROS = ("non_zeros_proportion1", "non_zeros_proportion2")


def _fractions(de: pd.DataFrame, groups, names: list[str], reference) -> dict:
    """scanpy's ``pts`` (genes x groups, the reference group's column too where there is
    one) and, against the rest, ``pts_rest``: the shares of cells with a non-zero count
    that scvi-tools' table holds (``all_stats=True``, its default); none without them."""
    if not all(column in de for column in _NON_ZEROS):
        return {}
    share, rest = {}, {}
    for group, name in zip(groups, names, strict=True):
        rows = de[(de["group1"] == group).to_numpy()]
        share[name] = rows[_NON_ZEROS[0]].astype(np.float64)
        rest[name] = rows[_NON_ZEROS[1]].astype(np.float64)
    if reference is not None:  # the same cells in every comparison: the first one's
        share[str(reference)] = next(iter(rest.values()))
    out = {"pts": pd.DataFrame(share)}
    if reference is None:
        out["pts_rest"] = pd.DataFrame(rest)
    return out


def write_rank_genes_groups(
    adata: AnnData, de: pd.DataFrame, key_added: str, groupby: str, reference
) -> None:
    """``de`` written into ``adata.uns[key_added]`` (:func:`rank_genes_groups_layout`),
    ``pts`` and ``pts_rest`` with their genes in ``adata``'s order and their groups in the
    order of ``groupby``'s categories, as scanpy writes them."""
    layout = rank_genes_groups_layout(de, groupby, reference)
    column = adata.obs[groupby]
    order = [str(c) for c in (column.cat.categories if hasattr(column, "cat") else [])]
    for field in ("pts", "pts_rest"):
        if field in layout:
            table = layout[field]
            genes = adata.var_names.intersection(table.index, sort=False)
            groups = [g for g in order if g in table] + [g for g in table if g not in order]
            layout[field] = table.loc[genes, groups] if len(genes) == len(table) else table
    adata.uns[key_added] = layout


def with_key_added(differential_expression) -> inspect.Signature:
    """scvi-tools' ``differential_expression`` signature with deltavae's ``key_added``."""
    signature = inspect.signature(differential_expression)
    params = list(signature.parameters.values())
    added = inspect.Parameter(
        "key_added", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
    )
    return signature.replace(parameters=[*params[:-1], added, params[-1]])  # before **kwargs
