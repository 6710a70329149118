"""The colours of the user's labels carried to CGMDVAE's written label and cluster columns.

A supervised or semi-supervised model names its clusters after the labels (``labels_key``),
and a query model's ``obs["cgmdvae_label"]`` holds the reference's labels; scanpy coloured
those columns by position, so the same cell type was drawn in one colour in
``sc.pl.umap(adata, color="cell_type")`` and in another in ``color="cgmdvae_cluster"`` (and
in yet another where a label no cell got was left out of the written categories). The
colours of ``uns["<labels_key>_colors"]`` are carried by category name
(:func:`~deltavae.model._prediction_frame.carried_colours`), where every written category has
one, as scanpy's ``ingest`` carries the reference's; for a query model without a palette of
its own, its reference's (:func:`reference_label_colours`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._prediction_frame import carried_colours, training_colours
from ._scanpy_keys import palette_by_name


def _labels_palette(model, adata: AnnData, column: pd.Categorical) -> list | None:
    """The colours of ``column``'s categories by name in the user's palette of the labels
    column: ``adata``'s own (the AnnData written into), else the model's AnnData's (the
    training data; a query model's: the query); ``None`` where a category has none."""
    labels_key = model.registry_["setup_args"].get("labels_key")
    if labels_key is None:
        return None
    kept = pd.DataFrame({labels_key: column})
    more = training_colours(model)
    palette = carried_colours(adata.uns, adata.obs, kept, *more).get(f"{labels_key}_colors")
    named = getattr(model, "reference_label_colours_", None) or {}
    if palette is None and named and all(c in named for c in column.categories):
        palette = [named[c] for c in column.categories]  # a query model's reference's
    return palette


def reference_label_colours(reference) -> dict | None:
    """A query model's ``reference_label_colours_`` (saved with it): the colours of the labels
    of ``reference`` (a model in memory; ``None`` for a saved directory, whose own record
    scvi-tools copies) by name, from its AnnData's ``uns["<labels_key>_colors"]`` over those of
    its own reference, as scanpy's ``ingest`` carries the reference's colours."""
    if not hasattr(reference, "registry_"):
        return None
    named = dict(getattr(reference, "reference_label_colours_", None) or {})
    labels_key = reference.registry_["setup_args"].get("labels_key")
    adata = getattr(reference, "adata", None)
    if labels_key is not None and adata is not None:
        named.update(palette_by_name(adata.uns, adata.obs, labels_key))
    return named or None


def _colours_stand(adata: AnnData, name: str, column: pd.Categorical) -> bool:
    """The colours ``adata`` holds for obs column ``name`` cover every written category by
    name (``update_scanpy_keys`` keeps them so, as for any rewritten column)."""
    colours, old = adata.uns.get(f"{name}_colors"), adata.obs.get(name)
    if colours is None or old is None or not isinstance(old.dtype, pd.CategoricalDtype):
        return False
    before = old.cat.categories
    return len(np.asarray(colours).ravel()) == len(before) and bool(
        np.all(before.get_indexer(column.categories) >= 0)
    )


def carry_label_colours(model, adata: AnnData, columns: dict[str, pd.Categorical]) -> list[str]:
    """Before the written ``columns`` (obs name to values) replace ``adata``'s: each one's
    colours in ``uns["<name>_colors"]`` from the user's labels palette (see the module), unless
    the colours it has cover it by name (they stand); the ``uns`` keys written, which
    ``update_scanpy_keys`` leaves as they are."""
    written = []
    for name, column in columns.items():
        if _colours_stand(adata, name, column):
            continue
        palette = _labels_palette(model, adata, column)
        if palette is not None:
            adata.uns[f"{name}_colors"] = palette
            written.append(f"uns/{name}_colors")
    return written


def sampled_colours(model, out: AnnData, cluster: str) -> dict:
    """The ``uns`` colours of :meth:`~deltavae.model.CGMDVAE.sample`'s cells ``out``: of its
    labels and condition columns, the training AnnData's by name (so that sampled cells
    concatenated with real ones are drawn alike); of its ``cluster`` column, the labels' (see
    :func:`carry_label_colours`), never the training column's of that name (another
    clustering's: its ``"0"`` is not the model's cluster ``"0"``)."""
    training = training_colours(model)
    if not training:
        return {}
    colours = carried_colours(*training[0], out.obs.drop(columns=[cluster]))
    palette = _labels_palette(model, out, out.obs[cluster].values)
    if palette is not None:
        colours[f"{cluster}_colors"] = palette
    return colours
