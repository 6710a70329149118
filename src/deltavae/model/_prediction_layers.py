"""The counts of a prediction where the model reads them from a layer: the scanpy layout, raw
counts in ``layers["counts"]`` (or another name) and log-normalized values in ``X``."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._checks import not_counts
from .._warn import warn_user
from ._count_advice import _first_rows


def match_counts_layer(model, given: AnnData, out: AnnData) -> None:
    """Give a count model's prediction ``out`` (whole counts in ``layers["counts"]``) the layout
    of the cells ``given`` where the model reads their counts from a layer
    (``setup_anndata(adata, layer="raw")``): the whole counts in that layer too, so that
    ``anndata.concat`` with the real cells, which keeps the layers every part holds, keeps one
    layer of counts for all (a layer of another name than ``"counts"`` was dropped, and the
    prediction's counts with it). Where the given cells' ``X`` is not counts (values that are
    not whole: log-normalized, most often), say so: the prediction's ``X`` holds expected
    counts, and concatenated with those cells, ``X`` would mix the two scales.

    Examples
    --------
    >>> class Model:
    ...     registry_ = {"setup_args": {"layer": "raw"}}
    >>> given = AnnData(np.array([[0.0, 2.0]]), layers={"raw": np.array([[0.0, 2.0]])})
    >>> out = AnnData(np.array([[0.4, 1.8]]), layers={"counts": np.array([[0.0, 2.0]])})
    >>> match_counts_layer(Model(), given, out)
    >>> sorted(out.layers)
    ['counts', 'raw']
    """
    layer = model.registry_["setup_args"].get("layer")
    if layer is None or "counts" not in out.layers:
        return
    if layer not in out.layers:  # a copy: scanpy's in-place steps on one leave the other
        out.layers[layer] = np.array(out.layers["counts"], copy=True)
    looked = _first_rows(given.X)
    if looked is None or not not_counts(looked[1]).size:
        return
    warn_user(
        f"adata.X holds values that are not counts (e.g. {float(not_counts(looked[1])[0]):.4g}; "
        f"log-normalized?) while the model reads counts from layers[{layer!r}]: the prediction's "
        "X holds expected counts, so anndata.concat of these cells and the prediction mixes "
        f"the two scales in X. Its whole counts are in layers[{layer!r}], as the cells' are: "
        f"concatenate, then both.X = both.layers[{layer!r}].copy() and normalize all cells "
        "alike (sc.pp.normalize_total, sc.pp.log1p)."
    )
