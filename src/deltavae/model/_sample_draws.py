"""The cluster and conditions of each cell :meth:`deltavae.model.CGMDVAE.sample` draws: from
the training cells' combinations of cluster (their label, or for unlabelled cells the most
probable cluster of q(y | z, c)) and condition values (``cluster_conditions_``).

Drawn each on its own (the cluster from p(y | d) p(d), whose Dir(alpha) is symmetric, the
conditions from their training frequencies), cells came in every cluster alike and under
combinations never trained: a cell type held out of the stimulation was drawn stimulated
as often as the others, and a type seen mostly stimulated came half in control.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from scvi import REGISTRY_KEYS

from .._checks import short_repr
from ._condition_counts import draw_conditions, not_test_positions, training_positions
from ._fit_records import keep, summed
from ._library_stats import record_cluster_library_stats
from ._validation import warn_user


def record_cluster_conditions(model, log_lib: np.ndarray | None = None) -> None:
    """After a fit: the training cells (``train_indices``) per ``(cluster, *condition
    values)`` (strings: the cluster's name, then the condition keys' values in their order),
    labelled cells by their label and the others by their most probable cluster, in
    ``model.cluster_conditions_`` (saved with the model). Added to what fits on other cells
    recorded (a query's to its reference's); a fit again of the same cells (by name, after
    ``load`` too: ``fit_records_``) replaces what the last fit of them recorded.
    ``log_lib``: every cell's log library size where the caller read it already."""
    from ._fit_records import _digest

    cells = training_positions(model)
    if not len(cells):
        return
    every = model.predict_clusters()  # every cell's: train's check of empty clusters too
    model._clusters_after_fit = every
    n_labels = len(model.label_names)
    if n_labels:  # labelled cells by their label (the unlabelled mark is the last code)
        codes = model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)
        codes = np.asarray(codes).ravel().astype(int)
        every = np.where(codes < n_labels, codes, every)
    names = np.asarray(model.cluster_names, dtype=object)[every]
    columns = [names] + [
        model.adata.obs[key].astype(str).to_numpy() for key in model.condition_keys
    ]
    # The depth of each cell type, of the cells outside the test split as the pooled and
    # per-condition library sizes (a library size is observed, not fitted).
    read = not_test_positions(model)
    record_cluster_library_stats(model, read, [column[read] for column in columns], log_lib)
    combos = Counter(zip(*[column[cells] for column in columns], strict=True))
    table = Counter(getattr(model, "cluster_conditions_", None) or {})
    digest, last = (
        _digest(model),
        getattr(model, "cluster_conditions_last_", None),
    )
    if last is not None and last[0] == digest:  # these cells' last record, replaced
        table -= Counter(last[1])  # (of a model saved before fit_records_ was kept)
    # Summed over every AnnData's last fit; ``table``: a model's saved before, kept beside
    model.cluster_conditions_ = summed(
        keep(model, "cluster_conditions_", dict(combos), dict(table))
    )


def draw_cells(model, n: int, cluster: int | None, codes: np.ndarray | None, draws):
    """Each of ``n`` cells' cluster (an int64 array; ``cluster``, its index, where the user
    named one) and condition codes (cells x keys; ``codes``, one row with -2 for each key
    to draw, ``None`` without conditions), drawn together from ``cluster_conditions_``
    among the training combinations that agree with what was named, with the uniform draws
    of ``draws`` (:class:`~deltavae.distributions._draws.CellDraws`), one per cell: the
    first cells of a seed are the same whatever ``n``. What was named is kept; a named
    part that no training cell carried with the others, where the rest is to draw, is
    refused. A model saved before the combinations were kept draws the cluster from the
    prior (returned as ``None``) and the conditions from their own frequencies."""
    table = getattr(model, "cluster_conditions_", None)
    drawn = [] if codes is None else list(np.flatnonzero(codes[0] == -2))
    rows = None if codes is None else np.repeat(codes, n, axis=0)
    if table is None:
        if drawn:
            rows = draw_conditions(model, rows, np.random.default_rng(draws.seed))
        return None if cluster is None else np.full(n, cluster), rows
    if cluster is not None and not drawn:  # everything named: nothing to draw
        return np.full(n, cluster), rows
    names, keys = model.cluster_names, model.condition_keys
    known = [names] + [[str(v) for v in model._cat_state().mappings[key]] for key in keys]
    named = {} if cluster is None else {0: names[cluster]}
    if codes is not None:
        named |= {j + 1: known[j + 1][c] for j, c in enumerate(codes[0]) if c >= 0}
    options = _options(table, known, named)
    if not options and 0 in named and not any(c[0] == named[0] and k for c, k in table.items()):
        warn_user(
            f"Cluster {named[0]!r} holds no training cell (none was labelled or predicted in "
            "it), so its cells are drawn under the conditions of all training cells and the "
            "model extrapolates: what it learned of this cluster came from no cell."
        )
        options = _options(table, known, {i: v for i, v in named.items() if i})
    if not options and cluster is None and not drawn:  # conditions named that never trained
        return draw_cells(model, n, None, None, draws)[0], rows  # together: warned of
    if not options:
        raise ValueError(_nothing_trained(model, table, named))
    p = np.cumsum([count for _, count in options], dtype=float)
    u = draws.uniform((n,), "cells").double().numpy() * p[-1]
    picked = np.array([combo for combo, _ in options], dtype=np.int64)[
        np.minimum(np.searchsorted(p, u, side="right"), len(options) - 1)
    ]
    if rows is not None:
        rows[:, drawn] = picked[:, 1:][:, drawn]
    return picked[:, 0] if cluster is None else np.full(n, cluster), rows


def _options(table: dict, known: list, named: dict) -> list:
    """The combinations of ``table`` (as codes: ``known``'s positions) with training cells
    that agree with ``named`` (field position: value), in code order, with their cells."""
    return sorted(
        (tuple(values.index(v) for values, v in zip(known, combo, strict=True)), count)
        for combo, count in table.items()
        if count > 0
        and all(v in values for values, v in zip(known, combo, strict=True))
        and all(combo[i] == v for i, v in named.items())
    )


def _nothing_trained(model, table: dict, named: dict) -> str:
    """The refusal of a cluster and conditions that no training cell carried together."""
    fields = ["cluster", *model.condition_keys]
    asked = ", ".join(f"{fields[i]}={v!r}" for i, v in sorted(named.items()))
    if 0 in named:  # the combinations the cluster's cells carried
        seen = sorted({c[1:] for c, n in table.items() if n > 0 and c[0] == named[0]})
        carried = f"the training cells of cluster {named[0]!r} carried ({fields[1:]}): "
    else:
        seen = sorted({tuple(c[i] for i in named) for c, n in table.items() if n > 0})
        carried = f"the values of {[fields[i] for i in named]} that trained together: "
    return (
        f"No training cell carries {asked} together, so there is nothing to draw the other "
        f"conditions from; {carried}{short_repr(seen, 10, 'combinations')}. Name every "
        "condition (condition={...}) to draw cells there anyway: the model then extrapolates."
    )


def cluster_asked(model, cluster, label) -> int | None:
    """The index of the cluster ``sample`` was asked for: ``cluster`` (a name or an index),
    or ``label``, a label of the model's labels column (as scvi-tools and scGen name cell
    types; ``sample(label="B cells")``), not both."""
    if label is None:
        return None if cluster is None else model._cluster_index(cluster)
    if cluster is not None:
        raise ValueError(
            f"sample got cluster={short_repr(cluster)} and label={short_repr(label)}; give "
            "one: label= is a label of the labels column, cluster= a label or a novel cluster."
        )
    labels = model.label_names
    if not labels:
        raise ValueError(
            f"label={short_repr(label)}: the model was set up without a labels_key, so its "
            f"clusters have no labels; use cluster= (clusters: {short_repr(model.cluster_names)})."
        )
    if isinstance(label, list | tuple | set | np.ndarray | pd.Series | pd.Index):
        raise ValueError(
            f"label={short_repr(label)} is several labels; give one label (labels: "
            f"{short_repr(labels, 20, 'labels')}), and call once per label."
        )
    try:
        index = model._cluster_index(label)
    except ValueError:
        index = None
    if index is None or index >= len(labels):
        raise ValueError(
            f"label={short_repr(label)} is not a label of the model; labels: "
            f"{short_repr(labels, 20, 'labels')} (a novel cluster is asked for by cluster=)."
        )
    return index
