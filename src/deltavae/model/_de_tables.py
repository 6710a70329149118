"""The tables and arrays scvi-tools' expression calls return, put in the order the call
asked for: the genes of ``gene_list`` in its order, and genes tied on the DE sort key by the
size of their effect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._checks import no_column


def in_gene_list_order(result, gene_list, genes: pd.Index, axis: int, all_genes: bool = False):
    """scvi-tools' read-out of ``gene_list`` with its genes (along ``axis``) in the order of
    the list: scvi-tools keeps the model's order, so the columns of an array were not the
    genes of the list in its order (``gene_list=["CD3E", "CD14"]``: CD14 first, silently).

    ``all_genes``: the read-out holds every gene of ``genes`` (scvi-tools ignores
    ``gene_list`` given with ``dataloader=``), from which the list's are taken here.

    Examples
    --------
    >>> genes = pd.Index(["a", "b", "c"])
    >>> in_gene_list_order(np.array([[0, 1, 2]]), ["c", "a"], genes, -1, all_genes=True)
    array([[2, 0]])
    """
    if gene_list is None:
        return result
    names = [gene_list] if isinstance(gene_list, str) else [str(g) for g in gene_list]
    chosen = genes[genes.isin(names)]  # scvi-tools' genes, in its order
    # A set has no order: the model's.
    wanted = chosen if isinstance(gene_list, set | frozenset) else pd.unique(np.asarray(names))
    order = (genes if all_genes else chosen).get_indexer(wanted)
    if len(order) == result.shape[axis] and (order == np.arange(len(order))).all():
        return result
    if isinstance(result, pd.DataFrame):
        return result.iloc[:, order]
    index = [slice(None)] * result.ndim
    index[axis] = order
    return result[tuple(index)]


def effect_breaks_ties(result):
    """scvi-tools' DE table with the genes tied on its sort key (``proba_de`` in change mode,
    ``bayes_factor`` otherwise), put in order of ``|lfc_mean|`` (change mode) or of the
    difference of the groups' scales ``scale1 - scale2``, largest first; comparisons keep
    their order (a table of ``idx1``/``idx2`` has no ``comparison`` column: it is one
    comparison). The difference is signed, as ``bayes_factor`` is: of the genes tied at its
    lowest (down in group1 in every draw) the most down-regulated come last, at the end of
    the table where they are read (its absolute size put them first there, the weakest of
    them last)."""
    key = "proba_de" if "proba_de" in result else "bayes_factor"
    if "lfc_mean" in result:
        effect = result["lfc_mean"].abs()
    elif {"scale1", "scale2"} <= set(result):
        effect = result["scale1"] - result["scale2"]
    else:
        return result
    if key not in result:
        return result
    block = (
        pd.factorize(result["comparison"])[0]
        if "comparison" in result
        else np.zeros(len(result), dtype=int)
    )
    order = np.lexsort((-effect.to_numpy(float), -result[key].to_numpy(float), block))
    return result.iloc[order]


def check_importance_keywords(given: dict) -> None:
    """Refuse keywords of ``get_normalized_expression`` that scvi-tools would ignore: it
    gathers unknown keywords as ``importance_weighting_kwargs`` and reads them only with
    ``weights="importance"``, so a misspelt ``n_sample=10`` or a ``seed=0`` (which other
    read-outs take) did nothing, without a word."""
    extra = given.get("importance_weighting_kwargs") or {}
    if not extra or given.get("weights") == "importance":
        return
    name = next(iter(extra))
    hint = (
        "; it draws from torch's global generator: call torch.manual_seed(...) before it to "
        "repeat its draws"
        if name == "seed"
        else ""
    )
    raise TypeError(
        f"get_normalized_expression() got an unexpected keyword argument {name!r}{hint} "
        "(keywords it does not name are importance weighting's, read with "
        "weights='importance' only)."
    )


def missing_obs_column(arg: str, key, adata, passed: bool, call: str) -> KeyError:
    """The error for ``arg=key`` (``groupby``, ``sample_key``) that is not a column of the obs
    read. Where no AnnData was passed, that is the model's own, and the column was most often
    added to another one (leiden clusters of a copy or subset): the message says which AnnData
    was read and how to pass the other (``call``: the method's name).

    Examples
    --------
    >>> import anndata as ad
    >>> err = missing_obs_column("groupby", "leiden", ad.AnnData(np.zeros((2, 1))), False, "de")
    >>> "pass it: model.de(adata, groupby='leiden', ...)" in str(err)
    True
    """
    if passed:
        return KeyError(no_column(arg, key, adata.obs))
    return KeyError(
        no_column(arg, key, adata.obs, "the model's AnnData (model.adata: no adata was passed)")
        + " For the cells of another AnnData (a copy or subset you added the column to), pass "
        f"it: model.{call}(adata, {arg}={key!r}, ...)."
    )
