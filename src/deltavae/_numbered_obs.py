"""Cells or spots named by numbers with a table in ``obsm``: an AnnData anndata cannot copy.

A table in ``obsm`` (``dv.datasets.pseudo_spots``' ``proportions_true``, a spatial table) is
indexed by the obs names. Where the names are numbers (``spots.obs.index = range(n)``, an index
read from a table), anndata refuses the AnnData midway through any call: set through
``obs.index``, reading ``obsm`` fails ("value.index does not match parent's obs names"); set
through ``obs_names``, ``copy()`` and every AnnData built from its ``obs`` and ``obsm`` fail.
Setting the names as text through ``obs_names`` renames the tables' rows too.
"""

from __future__ import annotations

import pandas as pd
from anndata import AnnData

_NUMBERS = ("integer", "floating", "mixed-integer-float", "decimal")


def _numbered(names: pd.Index) -> bool:
    """Whether ``names`` are numbers (a range too), as anndata reads them against a table's."""
    return len(names) > 0 and names.inferred_type in _NUMBERS


def numbered_tables(adata: AnnData) -> list[str]:
    """The ``obsm`` keys of ``adata`` holding tables, where its obs names are numbers (else
    none); read from anndata's store where anndata refuses to read ``obsm`` itself."""
    if not isinstance(adata, AnnData) or not _numbered(adata.obs_names):
        return []
    try:
        entries = dict(adata.obsm)
    except ValueError:  # a table indexed otherwise than the names: anndata reads none of obsm
        entries = dict(getattr(adata, "_obsm", None) or {})
        return [k for k, v in entries.items() if isinstance(v, pd.DataFrame)] or ["?"]
    return [k for k, v in entries.items() if isinstance(v, pd.DataFrame)]


def refuse_numbered_tables(adata: AnnData, who: str) -> None:
    """Refuse ``adata`` (named ``who`` in the message) whose obs names are numbers while its
    ``obsm`` holds a table, naming the fix, before anndata fails on it midway through a call.

    Examples
    --------
    >>> import numpy as np
    >>> spots = AnnData(np.ones((3, 2)))
    >>> spots.obsm["coords"] = pd.DataFrame({"x": [0.0, 1.0, 2.0]}, index=spots.obs_names)
    >>> spots.obs.index = pd.RangeIndex(3)
    >>> refuse_numbered_tables(spots, "spots")
    Traceback (most recent call last):
    ...
    ValueError: spots.obs_names are numbers (int64, e.g. [0, 1, 2]) ...
    >>> spots.obs_names = spots.obs_names.astype(str)  # the fix it names
    >>> refuse_numbered_tables(spots, "spots")
    """
    tables = numbered_tables(adata)
    if not tables:
        return
    names = adata.obs_names
    raise ValueError(
        f"{who}.obs_names are numbers ({names.dtype}, e.g. {names[:3].tolist()}) and "
        f"{who}.obsm holds tables ({', '.join(map(repr, tables[:5]))}) indexed by the "
        f"names: anndata can neither read nor copy such an AnnData ({who}.obsm or "
        f"{who}.copy() fails), which the models do. Make the names text, which renames the "
        f"tables' rows too: {who}.obs_names = {who}.obs_names.astype(str)."
    )
