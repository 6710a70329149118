"""What to do when two gene lists share too few names: another capitalisation, another
identifier in a ``var`` column, or gene subsets chosen on each dataset apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData


def case_only_matches(genes, names) -> pd.Series:
    """Each of ``genes`` not in ``names`` that is one of ``names`` ignoring case (mouse 'Gad1'
    against 'GAD1'), in the order of ``genes``, with the first of ``names`` it is found as.

    Examples
    --------
    >>> case_only_matches(["Gad1", "Sst", "Vip"], ["GAD1", "Sst", "gad1"]).to_dict()
    {'Gad1': 'GAD1'}
    """
    genes, names = (pd.Index(np.asarray(g).astype(str)) for g in (genes, names))
    first = pd.Series(names, index=names.str.upper())
    first = first[~first.index.duplicated()]
    odd = genes[~genes.isin(names)]
    odd = odd[odd.str.upper().isin(first.index)]
    return pd.Series(first.loc[odd.str.upper()].to_numpy(), index=odd, dtype=object)


def _case_matches(genes: pd.Index, names: pd.Index) -> tuple[int, pd.Index, str]:
    """How many of ``genes`` are in ``names``, those found there only ignoring case, and the
    name the first of them has in ``names`` ("?" where two of ``names`` differ in case only,
    or none is found so)."""
    matches = case_only_matches(genes, names)
    unique = pd.Index(names.str.upper()).is_unique
    found = matches.iloc[0] if len(matches) and unique else "?"
    return int(genes.isin(names).sum()), matches.index, found


def identifier_advice(first, second) -> str:
    """What to do when two gene lists share too few names: make the capitalisation agree
    where ignoring case finds the genes (mouse 'Gad1' against 'GAD1'), else use the same
    identifiers.

    Examples
    --------
    >>> identifier_advice(["Gad1", "Sst"], ["GAD1", "SST", "PVALB"])[:44]
    'Ignoring case, they share 2 genes (e.g. Gad1'
    >>> identifier_advice(["Gad1"], ["ENSMUSG00000070880"])
    'Use the same gene identifiers (symbols or Ensembl IDs) in both.'
    """
    first, second = (pd.Index(np.asarray(g).astype(str)) for g in (first, second))
    exact, matches, other = _case_matches(first, second)
    if len(matches) > exact:
        return (
            f"Ignoring case, they share {exact + len(matches)} genes (e.g. {matches[0]} and "
            f"{other}): make the capitalisation agree, e.g. var_names.str.upper() on both."
        )
    return _version_advice(first, second, exact) or (
        "Use the same gene identifiers (symbols or Ensembl IDs) in both."
    )


#: How :func:`identifier_advice` begins where the genes are there by another spelling (its
#: capitalisation, a version suffix): advice to rename, not "use the same identifiers".
RENAMING = ("Ignoring case", "Without the version suffixes")

#: An Ensembl ID with its version (GENCODE's ENSG00000141510.16, ENSMUSG00000000001.4).
_VERSIONED = r"^(ENS[A-Z]*\d{6,})\.\d+$"


def _version_advice(first: pd.Index, second: pd.Index, exact: int) -> str:
    """Where Ensembl IDs with a version suffix in one list (or both) are the other's without
    it, or with another version: how many genes the lists share without the suffixes, and the
    line that strips them; ``""`` where the suffixes do not hide more shared genes.

    Examples
    --------
    >>> _version_advice(pd.Index(["ENSG00000141510.16"]), pd.Index(["ENSG00000141510"]), 0)[:47]
    'Without the version suffixes of their Ensembl I'
    """
    bare_first, bare_second = (
        names.str.replace(_VERSIONED, r"\1", regex=True) for names in (first, second)
    )
    found = int(bare_first.isin(bare_second).sum())
    if found <= exact:
        return ""
    versioned = first[first != bare_first].append(second[second != bare_second])
    return (
        f"Without the version suffixes of their Ensembl IDs (e.g. {versioned[0]}), they share "
        f"{found} genes: strip the suffixes where they are, e.g. adata.var_names = "
        f"adata.var_names.str.replace(r'{_VERSIONED}', r'\\1', regex=True), on both."
    )


def names_column_advice(datasets: dict[str, AnnData]) -> str:
    """Where a ``var`` column of one of two AnnDatas holds more of the other's gene names than
    their ``var_names`` share (Ensembl IDs as names, the symbols in ``var["gene_symbols"]``;
    symbols as names, the IDs in ``var["gene_ids"]``, as scanpy's 10x readers write them): the
    line that renames its genes by that column, the second's (the reference's) first; ``""``
    where no column does.

    Examples
    --------
    >>> ids = AnnData(var=pd.DataFrame({"symbol": ["Gad1", "Sst"]}, index=["ENS1", "ENS2"]))
    >>> ref = AnnData(var=pd.DataFrame(index=["Sst"]))
    >>> names_column_advice({"spots": ids, "reference": ref})[:61]
    "spots.var['symbol'] holds 1 of the gene names of reference: n"
    """
    (first_name, first), (second_name, second) = datasets.items()
    most = int(first.var_names.isin(second.var_names).sum())
    best = None
    for name, adata, other, other_name in (
        (second_name, second, first, first_name),
        (first_name, first, second, second_name),
    ):
        for column in adata.var.columns:
            values = adata.var[column]
            if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
                continue
            found = int(pd.Index(values.astype(str)).isin(other.var_names).sum())
            if found > most:
                most, best = found, (name, column, other_name)
    if best is None:
        return ""
    name, column, other_name = best
    return (
        f"{name}.var[{str(column)!r}] holds {most} of the gene names of {other_name}: name "
        f"the genes of {name} by it first, {name}.var_names = "
        f"{name}.var[{str(column)!r}].astype(str), then {name}.var_names_make_unique()."
    )


def query_genes_advice(query: AnnData, genes) -> str:
    """What to do when a ``query`` shares too few of a reference's ``genes``: the line that
    names its genes by a ``var`` column holding the reference's names (Ensembl IDs as its
    names, the symbols in ``var["gene_symbols"]``), where one does; else
    :func:`identifier_advice`. A saved reference keeps its genes only, so only the query's
    columns are searched."""
    reference = AnnData(var=pd.DataFrame(index=pd.Index(np.asarray(genes).astype(str))))
    return names_column_advice({"query": query, "reference": reference}) or identifier_advice(
        query.var_names, reference.var_names
    )


def naming_hint(adata: AnnData, genes, names_of: str = "model.adata.var_names") -> str:
    """Where a model's ``genes`` that ``adata`` lacks are there by another name, how to name
    them as the model does (by a ``var`` column holding them, or by their capitalisation:
    mouse 'Gapdh' against 'GAPDH'), with a leading space; ``""`` where they are not.
    ``names_of``: the expression of the model's gene names in the line it gives.

    Examples
    --------
    >>> spots = AnnData(var=pd.DataFrame(index=["XKR4", "SNTG1"]))
    >>> naming_hint(spots, ["Xkr4", "Sntg1"])[:58]
    ' Ignoring case, adata holds 2 of them (e.g. XKR4 for Xkr4)'
    >>> naming_hint(spots, ["XKR4", "Gad1"])
    ''
    """
    genes = pd.Index(np.asarray(genes).astype(str))
    model = AnnData(var=pd.DataFrame(index=genes))
    column = names_column_advice({"adata": adata, "model": model})
    if column:
        return f" {column}"
    exact, by_case, found = _case_matches(genes, pd.Index(adata.var_names.astype(str)))
    if 2 * len(by_case) <= len(genes) - exact:  # most of the genes it lacks are missing
        return ""
    return (
        f" Ignoring case, adata holds {len(by_case)} of them (e.g. {found} for {by_case[0]}): "
        f"name them as the model does, names = {{g.upper(): g for g in {names_of}}}; "
        "adata.var_names = [names.get(g.upper(), g) for g in adata.var_names]."
    )


def refuse_no_shared_genes(query: AnnData, genes) -> None:
    """Refuse a ``query`` that shares none of the reference's ``genes`` (scvi-tools'
    ``prepare_query_anndata`` said "No reference var names found in query data"), saying
    how to name them (:func:`query_genes_advice`)."""
    genes = pd.Index(np.asarray(genes).astype(str))
    if not genes.isin(query.var_names.astype(str)).any():
        raise ValueError(
            f"The query shares none of the reference's {len(genes)} genes (e.g. "
            f"{genes[:3].tolist()}; the query's: {query.var_names[:3].astype(str).tolist()}). "
            + query_genes_advice(query, genes)
        )


def _cut_to_subset(adata) -> bool:
    """Whether ``adata`` holds a subset of its genes: scanpy's highly variable genes kept
    (``var["highly_variable"]`` true for every gene), or ``adata.raw`` with more genes."""
    raw = getattr(adata, "raw", None)
    if raw is not None and raw.n_vars > adata.n_vars:
        return True
    flags = adata.var.get("highly_variable")
    return flags is not None and adata.n_vars > 0 and bool(np.all(flags.to_numpy() == True))  # noqa: E712


def subset_advice(datasets: dict) -> str:
    """What to do when AnnDatas share few genes because some were cut to a gene subset each
    on its own (highly variable genes selected separately mostly differ); ``""`` where none
    looks cut, or where they share no gene at all (identifiers, more likely).

    Examples
    --------
    >>> cut = AnnData(var=pd.DataFrame({"highly_variable": True}, index=["a", "b"]))
    >>> subset_advice({"spots": cut, "reference": AnnData(var=pd.DataFrame(index=["a"]))})[:46]
    'spots holds a subset of its genes (highly vari'
    """
    first, second = (adata.var_names for adata in datasets.values())
    cut = [name for name, adata in datasets.items() if _cut_to_subset(adata)]
    if not cut or not first.isin(second).any():
        return ""
    holds = f"{cut[0]} holds" if len(cut) == 1 else f"{' and '.join(cut)} hold"
    return (
        f"{holds} a subset of {'its' if len(cut) == 1 else 'their'} genes (highly variable genes "
        "or adata.raw with more): subsets chosen on each dataset apart share few genes. Pass "
        f"{' and '.join(datasets)} with all their genes (from_reference keeps the genes it "
        "needs), or choose the genes among those both hold, e.g. "
        "spots[:, spots.var_names.isin(reference.var_names)]."
    )
