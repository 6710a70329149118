"""Names with "/" that would become keys of an .h5ad file or a zarr store.

A "/" separates groups in HDF5 and zarr. Where a user's name is a value (a category of an obs
column, an index of a table, a field of scanpy's ``rank_genes_groups`` arrays) it is stored as
data and reads back as written. Where it becomes a key (a column of a DataFrame in ``obsm``:
the cell types of NMFDeconv's proportions, the genes SpatialImputer imputes, the samples of
``differential_abundance``), anndata 0.12 writes it to .h5ad with a FutureWarning, anndata
0.13 refuses it, and zarr refuses it already. The columns keep the user's names (users index
``adata.obsm["proportions"]["T/NK"]``); one warning, where the names first reach a model, says
which they are and the line that renames them. The command line, which writes the file itself,
renames them with :func:`renamed_names` and says so.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ._warn import warn_user

#: What a "/" becomes where deltavae renames (the command line) or advises a renaming.
REPLACEMENT = "-"

#: Where the spot models' ``write_to_adata`` puts a column per cell type.
PROPORTIONS_COLUMNS = "obsm['proportions'] (write_to_adata)"

#: The start of the warning, for the callers that say it themselves to filter it.
MESSAGE_START = "Some names hold '/'"


def slashed(names: Iterable) -> list[str]:
    """The names (as text) that hold a "/".

    Examples
    --------
    >>> slashed(["T/NK", "B", 3])
    ['T/NK']
    """
    return [str(name) for name in names if "/" in str(name)]


def renamed_column(frame: str, key: str) -> str:
    """The line that renames an obs column's values, categorical or not.

    Examples
    --------
    >>> renamed_column("reference", "cell_type")[:55]
    "reference.obs['cell_type'] = reference.obs['cell_type']"
    """
    column = f"{frame}.obs[{key!r}]"
    return (
        f"{column} = {column}.astype('category').cat.rename_categories("
        f"lambda s: str(s).replace('/', {REPLACEMENT!r}))"
    )


def warn_slashed(
    names: Iterable, what: str, where: str, fix: str, before: str = "building the model"
) -> bool:
    """Warn that ``names`` (``what``: "cell types", "genes") holding "/" become the column
    names of ``where``, which anndata >= 0.13 cannot write to .h5ad (nor zarr now), and give
    ``fix``, the line that renames them ``before`` what; ``True`` where it warned."""
    found = slashed(names)
    if not found:
        return False
    shown = ", ".join(repr(name) for name in found[:5]) + (", ..." if len(found) > 5 else "")
    warn_user(
        f"{MESSAGE_START}: {len(found)} {what} ({shown}) become the column names of {where}. "
        "anndata writes such names to .h5ad with a FutureWarning, anndata >= 0.13 will refuse "
        "them, and zarr refuses them already. To write the results to a file, rename them "
        f"before {before}: {fix}"
    )
    return True


def renamed_names(names: Iterable, what: str, among: Iterable = ()) -> dict[str, str]:
    """``{name: name with "/" replaced}`` for the names holding "/" (empty if none), refused
    where a renamed name is already one of ``names`` or of ``among`` (the names they must stay
    apart from), or two become one (``what`` names them in the error).

    Examples
    --------
    >>> renamed_names(["T/NK", "B"], "cell types")
    {'T/NK': 'T-NK'}
    >>> renamed_names(["T/NK", "T-NK"], "cell types")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cell types ['T/NK'] hold '/', ...
    """
    names = [str(name) for name in names]
    renames = {name: name.replace("/", REPLACEMENT) for name in slashed(names)}
    taken = (set(names) | {str(name) for name in among}) - set(renames)
    clashes = {old: new for old, new in renames.items() if new in taken}
    if len(set(renames.values())) < len(renames) or clashes:
        pairs = clashes or renames
        raise ValueError(
            f"{what} {sorted(pairs)} hold '/', which .h5ad and zarr files cannot store as "
            f"column names, and replacing it with {REPLACEMENT!r} would give a name already "
            f"there ({sorted(set(pairs.values()))}); rename them apart first."
        )
    return renames


def renamed_obsm_columns(adata) -> dict[str, dict[str, str]]:
    """Rename, in place, the "/" of the column names of ``adata``'s obsm DataFrames; the
    renamings by obsm key (empty if none)."""
    done = {}
    for key, value in list(adata.obsm.items()):
        if isinstance(value, pd.DataFrame):
            renames = renamed_names(value.columns, f"the columns of obsm[{key!r}]")
            if renames:
                adata.obsm[key] = value.rename(columns=renames)
                done[key] = renames
    return done


def warn_imputer_names(
    states, genes, measured, labels_key: str | None = None, from_reference: bool = False
) -> None:
    """SpatialImputer's names that become obsm columns: its reference states (``states``,
    ``None`` for the latent design: ``obsm['proportions']``) and the reference ``genes`` the
    spots do not measure (``obsm['imputed']``). The fix renames where the names come from:
    the reference's ``labels_key`` column and the AnnDatas' genes (``from_reference``), else
    the reference table given."""
    if states is not None:
        fix = f"reference.index = reference.index.str.replace('/', {REPLACEMENT!r})"
        if labels_key is not None:
            fix = renamed_column("reference", labels_key)
        warn_slashed(states, "reference states", PROPORTIONS_COLUMNS, fix)
    genes = pd.Index(genes).astype(str)
    imputed = genes[~genes.isin(pd.Index(measured).astype(str))]
    renamed = f".str.replace('/', {REPLACEMENT!r})"
    fix = (
        f"for a in (spots, reference): a.var_names = a.var_names{renamed}"
        if from_reference
        else f"reference.columns = reference.columns{renamed}; spots.var_names = "
        f"spots.var_names{renamed}"
    )
    fix += " (both, so that the genes they share still match)"
    warn_slashed(imputed, "genes to impute", "obsm['imputed'] (write_to_adata)", fix)


def warn_slashed_condition_keys(keys: Iterable | None) -> None:
    """CGMDVAE's condition columns named with "/": ``sample``, ``translate`` and
    ``predict_perturbation`` record the conditions asked under their columns' names
    (``uns["sample"]["condition"]``, ``uns["prediction"]["target"]``), which anndata 0.12 reads
    back from .h5ad as nested dicts, silently, and anndata >= 0.13 refuses, as it refuses the
    column itself. Said at setup, with the line that renames the columns."""
    keys = list(keys or ())  # None: no condition
    found = slashed(keys)
    if not found:
        return
    renames = {key: key.replace("/", REPLACEMENT) for key in found}
    first = found[0]
    head, _, tail = first.partition("/")
    given = [renames.get(str(key), key) for key in keys]
    warn_user(
        f"{MESSAGE_START}: condition_key {found[0] if len(found) == 1 else found!r} names obs "
        "columns with '/'. sample, translate and predict_perturbation record the conditions "
        "under their columns' names (uns['sample']['condition'], uns['prediction']['target']), "
        f"which anndata reads back from .h5ad as nested dicts ({{{head!r}: {{{tail!r}: ...}}}}), "
        "and anndata >= 0.13 (and zarr now) refuses them, as it refuses the columns "
        f"themselves. Rename them before setup_anndata: adata.obs = adata.obs.rename("
        f"columns={renames!r}), and pass condition_key={given[0] if len(given) == 1 else given!r}."
    )
