"""The colours of the user's labels carried to CGMDVAE's written label and cluster columns.

A supervised or semi-supervised model names its clusters after the labels (``labels_key``),
and a query model's ``obs["cgmdvae_label"]`` holds the reference's labels; scanpy coloured
those columns by position, so the same cell type was drawn in one colour in
``sc.pl.umap(adata, color="cell_type")`` and in another in ``color="cgmdvae_cluster"`` (and
in yet another where a label no cell got was left out of the written categories). The
colours of ``uns["<labels_key>_colors"]`` are carried by category name (integer labels also
by their strings, as beside ``novel_j`` clusters), as scanpy's ``ingest`` carries the
reference's, over a query model's reference's (:func:`reference_label_colours`, a model's or
a saved directory's: :func:`record_label_colours`); categories without one (``novel_j``
clusters) get new colours, none of the user's, and the unlabelled mark (cells
``unknown_below`` marked) without one scanpy's grey of missing values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from ._prediction_frame import carried_colours, training_colours
from ._scanpy_keys import palette_by_name
from ._typicality import unknown_mark

#: The colour of cells marked unlabelled (``unknown_below``) where the user gave the mark none:
#: scanpy's colour of missing values (``na_color``, "lightgray"), not a type's vivid one.
UNLABELLED_COLOUR = "#d3d3d3"


def _by_name(model, adata: AnnData) -> dict:
    """The user's colours of the labels by name: a query model's reference's, those saved
    with the model (``label_colours_``), the model's AnnData's (the training data; a query
    model's: the query), ``adata``'s (the AnnData written into), each over the ones before."""
    labels_key = model.registry_["setup_args"].get("labels_key")
    named = dict(getattr(model, "reference_label_colours_", None) or {})
    named.update(getattr(model, "label_colours_", None) or {})
    if labels_key is not None:
        for uns, obs in (*training_colours(model), (adata.uns, adata.obs)):
            named.update(palette_by_name(uns, obs, labels_key))
    return named


def _new_colours(used, n: int) -> list[str]:
    """``n`` colours of scanpy's default palettes (its 20 first), none of them one of
    ``used``."""
    from matplotlib.colors import to_hex
    from scanpy.plotting import palettes

    taken = set()
    for colour in used:
        try:
            taken.add(to_hex(colour))
        except (ValueError, TypeError):  # not a colour matplotlib reads: it clashes with none
            continue
    every = [*palettes.default_20, *palettes.default_28, *palettes.default_102]
    fresh = list(dict.fromkeys(to_hex(c) for c in every if to_hex(c) not in taken))
    return [fresh[i % len(fresh)] for i in range(n)]


def _labels_palette(model, adata: AnnData, column: pd.Categorical) -> list | None:
    """The colours of ``column``'s categories by name in the user's palette of the labels
    (:func:`_by_name`; integer labels also by their strings, ``"1"`` beside ``novel_j``
    clusters), the unlabelled mark without one :data:`UNLABELLED_COLOUR`, the others
    (``novel_j`` clusters, labels without one) new colours none of the user's; ``None`` where
    the user has none."""
    if model.registry_["setup_args"].get("labels_key") is None:
        return None
    named = _by_name(model, adata)
    if not named:
        return None
    as_text = {str(k): v for k, v in named.items()}
    palette = [named.get(c, as_text.get(str(c))) for c in column.categories]
    mark = str(unknown_mark(model, column.categories))
    palette = [
        UNLABELLED_COLOUR if c is None and str(cat) == mark else c
        for c, cat in zip(palette, column.categories, strict=True)
    ]
    fresh = iter(_new_colours(named.values(), sum(c is None for c in palette)))
    return [next(fresh) if c is None else c for c in palette]


def reference_label_colours(reference, attr_dict: dict | None = None) -> dict | None:
    """A query model's ``reference_label_colours_`` (saved with it): the colours of the labels
    of ``reference`` by name, from its AnnData's ``uns["<labels_key>_colors"]`` over those of
    its own reference (a model in memory), or as saved with it (a saved directory's
    ``attr_dict``: :func:`record_label_colours`), as scanpy's ``ingest`` carries the
    reference's colours."""
    if not hasattr(reference, "registry_"):
        saved = attr_dict or {}
        return saved.get("label_colours_") or saved.get("reference_label_colours_")
    named = dict(getattr(reference, "reference_label_colours_", None) or {})
    named.update(getattr(reference, "label_colours_", None) or {})
    labels_key = reference.registry_["setup_args"].get("labels_key")
    adata = getattr(reference, "adata", None)
    if labels_key is not None and adata is not None:
        named.update(palette_by_name(adata.uns, adata.obs, labels_key))
    return named or None


def record_label_colours(model) -> None:
    """Before ``save``: the colours of the model's labels by name (:func:`reference_label_colours`)
    in ``label_colours_``, saved with it, so that a query model built from the saved directory
    (or the model loaded without them) draws the labels as one built from the model does."""
    if colours := reference_label_colours(model):
        model.label_colours_ = colours


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
