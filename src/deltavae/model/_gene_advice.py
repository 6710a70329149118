"""What to do when two gene lists share too few names: another capitalisation, spaces around
the names (a table's cells typed 'CD3E '), Ensembl IDs with and without their version
suffixes, another identifier in a ``var`` column, or gene subsets chosen on each dataset
apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._close_names import suffixed_hint


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


#: An Ensembl ID (human ENSG, mouse ENSMUSG, transcripts ENST ...) and its version suffix.
_ENSEMBL_VERSION = r"^(ENS[A-Z]*\d{6,})\.\d+$"
#: The line that strips the suffixes, as the user would write it: of Ensembl IDs only, so
#: that symbols ending in a number (RP11-34P13.7) keep their names.
STRIP_VERSIONS = (
    f"adata.var_names = adata.var_names.str.replace(r'{_ENSEMBL_VERSION}', r'\\1', regex=True)"
)
#: How :func:`identifier_advice` begins where the genes are there by another spelling (its
#: capitalisation, a version suffix, an appended ID): advice to rename, not "use the same
#: identifiers".
RENAMING = (
    "Ignoring case",
    "Without the spaces",
    "Without the version suffixes",
    "Without the Ensembl IDs",
)


def space_only_matches(genes, names) -> pd.Series:
    """Each of ``genes`` not in ``names`` that is one of ``names`` once the spaces around both
    are taken off ('CD3E ' against 'CD3E', either way), in the order of ``genes``, with the
    first of ``names`` it is found as.

    Examples
    --------
    >>> space_only_matches(["CD3E ", "MS4A1", "NKG7"], ["CD3E", " MS4A1", "GNLY"]).to_dict()
    {'CD3E ': 'CD3E', 'MS4A1': ' MS4A1'}
    """
    genes, names = (pd.Index(np.asarray(g).astype(str)) for g in (genes, names))
    first = pd.Series(names, index=names.str.strip())
    first = first[~first.index.duplicated()]
    odd = genes[~genes.isin(names)]
    stems = odd.str.strip()
    hit = np.asarray(stems.isin(first.index))
    return pd.Series(first.loc[stems[hit]].to_numpy(), index=odd[hit], dtype=object)


def version_only_matches(genes, names) -> pd.Series:
    """Each of ``genes`` not in ``names`` that is one of ``names`` once the version suffixes
    of Ensembl IDs are taken off both (GENCODE's 'ENSG00000187608.5' against Ensembl's
    'ENSG00000187608'), in the order of ``genes``, with the first of ``names`` it is found
    as. Symbols that end in a number ('RP11-34P13.7') are not read as versions.

    Examples
    --------
    >>> version_only_matches(["ENSG00000187608.5", "ENSG1", "CD3E"], ["ENSG00000187608"]).to_dict()
    {'ENSG00000187608.5': 'ENSG00000187608'}
    """
    genes, names = (pd.Index(np.asarray(g).astype(str)) for g in (genes, names))
    first = pd.Series(names, index=names.str.replace(_ENSEMBL_VERSION, r"\1", regex=True))
    first = first[~first.index.duplicated()]
    odd = genes[~genes.isin(names)]
    stems = odd.str.replace(_ENSEMBL_VERSION, r"\1", regex=True)
    hit = np.asarray(stems.isin(first.index))
    return pd.Series(first.loc[stems[hit]].to_numpy(), index=odd[hit], dtype=object)


def version_hint(genes, names, where: str = "the query") -> str:
    """How many of ``genes`` ``names`` (the genes of ``where``) holds under another version
    of their Ensembl ID, and the line that takes the suffixes off, with a leading space;
    ``""`` where it holds none so."""
    matches = version_only_matches(genes, names)
    if not len(matches):
        return ""
    return (
        f" {len(matches)} of them are in {where} with another version suffix (e.g. "
        f"{matches.iloc[0]} for {matches.index[0]}): take the suffixes off the Ensembl IDs of "
        f"both, {STRIP_VERSIONS}, so that they are read."
    )


def spaces_hint(genes, names, where: str = "the query") -> str:
    """How many of ``genes`` ``names`` (the genes of ``where``) holds with spaces around their
    names (or without the spaces of ``genes``), and the line that strips them, with a leading
    space; ``""`` where it holds none so."""
    matches = space_only_matches(genes, names)
    if not len(matches):
        return ""
    return (
        f" {len(matches)} of them are in {where} with spaces around their names (e.g. "
        f"{matches.iloc[0]!r} for {matches.index[0]!r}): strip them on both, "
        "adata.var_names = adata.var_names.str.strip(), so that they are read."
    )


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
    spaced = space_only_matches(first, second)
    if len(spaced) > exact:
        return (
            f"Without the spaces around their names, they share {exact + len(spaced)} genes "
            f"(e.g. {spaced.index[0]!r} and {spaced.iloc[0]!r}): strip them, e.g. "
            "adata.var_names = adata.var_names.str.strip(), on both."
        )
    versions = version_only_matches(first, second)
    if len(versions) > exact:
        return (
            f"Without the version suffixes of their Ensembl IDs, they share "
            f"{exact + len(versions)} genes (e.g. {versions.index[0]} and {versions.iloc[0]}): "
            f"strip the suffixes where they are, e.g. {STRIP_VERSIONS}, on both."
        )
    return _suffixed_advice(first, second, exact) or (
        "Use the same gene identifiers (symbols or Ensembl IDs) in both."
    )


#: A symbol with an Ensembl ID appended (muscat's CD79A_ENSG00000105369, Rpl7_ENSMUSG...).
_SUFFIXED = r"[_.|:-]ENS[A-Z]*\d{6,}(?:\.\d+)?$"


def _suffixed_advice(first: pd.Index, second: pd.Index, exact: int) -> str:
    """Where symbols with an Ensembl ID appended in one list (or both) are the other's
    symbols: how many genes the lists share without the IDs, which (:func:`suffixed_hint`),
    and the line that strips them; ``""`` where the IDs do not hide more shared genes.

    Examples
    --------
    >>> _suffixed_advice(pd.Index(["Rpl7"]), pd.Index(["Rpl7_ENSMUSG00000043716"]), 0)[:52]
    "Without the Ensembl IDs appended to their symbols ('"
    """
    bare_first, bare_second = (
        names.str.replace(_SUFFIXED, "", regex=True) for names in (first, second)
    )
    found = int(bare_first.isin(bare_second).sum())
    if found <= exact:
        return ""
    shown = bare_first[bare_first.isin(bare_second) & ~first.isin(second)][:3]
    hint = suffixed_hint(shown, second[second != bare_second]) or suffixed_hint(
        bare_second[bare_second.isin(bare_first) & ~second.isin(first)][:3], first
    )
    hint = hint.removesuffix(" here")  # of either list
    return (
        f"Without the Ensembl IDs appended to their symbols ({hint}), they share {found} "
        f"genes: name those genes by their symbols, e.g. adata.var_names = "
        f"adata.var_names.str.replace(r'{_SUFFIXED}', '', regex=True), then "
        "adata.var_names_make_unique()."
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
        return _spaces_hint(adata, genes, exact, names_of)
    return (
        f" Ignoring case, adata holds {len(by_case)} of them (e.g. {found} for {by_case[0]}): "
        f"name them as the model does, names = {{g.upper(): g for g in {names_of}}}; "
        "adata.var_names = [names.get(g.upper(), g) for g in adata.var_names]."
    )


def _spaces_hint(adata: AnnData, genes: pd.Index, exact: int, names_of: str) -> str:
    """:func:`naming_hint`'s line where most of the model's ``genes`` that ``adata`` lacks are
    there with spaces around their names, or without the spaces the model's names have."""
    spaced = space_only_matches(genes, adata.var_names)
    if 2 * len(spaced) <= len(genes) - exact:
        return ""
    return (
        f" Without the spaces around their names, adata holds {len(spaced)} of them (e.g. "
        f"{spaced.iloc[0]!r} for {spaced.index[0]!r}): name them as the model does, names = "
        f"{{g.strip(): g for g in {names_of}}}; adata.var_names = [names.get(g.strip(), g) "
        "for g in adata.var_names]."
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
