"""Labels of cells a model reads: look-alikes of the unlabelled mark, and labels (or a labels
column) a trained model has not seen, read as unlabelled."""

from __future__ import annotations

import contextlib
import warnings
from importlib import import_module

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi.data.fields import CategoricalJointObsField, LabelsWithUnlabeledObsField

from .._checks import short_repr, user_columns
from .._close_names import did_you_mean
from ._condition_types import record_condition_dtypes
from ._few_cells import warn_few_cells
from ._label_order import ordered_as_labels
from ._matrices import with_column
from ._other_type_values import refuse_unmatched
from ._registered import category_mappings
from ._scvi_glue import _FEW_CELLS_WARNING
from ._validation import warn_user


class ConditionsByName(CategoricalJointObsField):
    """scvi-tools' field of several categorical obs columns, coding each cell's value by name.

    scvi-tools codes a registered AnnData's columns with ``astype(CategoricalDtype(training
    categories))``; pandas takes an unordered categorical with the same categories in another
    order as already of that dtype and keeps its codes, so ``["stim", "ctrl"]`` read stim
    cells as ctrl: another latent, other clusters and translations, without a word. The
    columns are read as values here (the field's own copy in ``obsm``; ``obs`` is untouched).
    """

    def _make_array_categorical(self, adata: AnnData, category_dict: dict | None = None) -> dict:
        if category_dict is not None:
            frame = getattr(adata, self.attr_name)[self.attr_key]
            for key in self.attr_keys:
                if isinstance(frame[key].dtype, pd.CategoricalDtype):
                    frame[key] = frame[key].astype(object)
        return super()._make_array_categorical(adata, category_dict)


class LabelsInColumnOrder(LabelsWithUnlabeledObsField):
    """scvi-tools' labels field, with the labels in their column's order.

    scvi-tools puts the unlabelled mark last by swapping it with the last label, so labels
    ``["B", "Unknown", "T", "NK"]`` became ``["B", "NK", "T"]`` (and the model's clusters
    were named in that order). The mark is moved last instead; a mapping that already ends
    with it (a saved or reference model's) is unchanged.

    Examples
    --------
    >>> t = pd.Categorical(["B", "?", "T", "NK"] * 3, categories=["B", "?", "T", "NK"])
    >>> a = AnnData(obs=pd.DataFrame({"t": t}, index=[f"c{i}" for i in range(12)]))
    >>> LabelsInColumnOrder("labels", "t", "?").register_field(a)["categorical_mapping"]
    array(['B', 'T', 'NK', '?'], dtype=object)
    """

    def _remap_unlabeled_to_final_category(self, adata: AnnData, mapping: np.ndarray) -> dict:
        mapping = np.asarray(mapping)
        mark = np.array([value == self._unlabeled_category for value in mapping], dtype=bool)
        if mark.any():
            mapping = np.concatenate([mapping[~mark], mapping[mark]])
        return super()._remap_unlabeled_to_final_category(adata, mapping)


def _label_state(registry: dict) -> tuple[str | None, str | None, set[str]]:
    """A model's labels column, its mark of unlabelled cells and every label value it knows
    (the mark included, as strings); ``(None, None, set())`` for a model without labels."""
    key = registry["setup_args"].get("labels_key")
    if key is None:
        return None, None, set()
    state = registry["field_registries"]["labels"]["state_registry"]
    unlabelled = state["unlabeled_category"]
    return key, unlabelled, {str(v) for v in state["categorical_mapping"]} | {str(unlabelled)}


def renamed_hint(new, known) -> str:
    """``"('STIM': did you mean 'stim'? ...) "`` for the categories of ``new`` (the first 3)
    close to one the model knows: a category renamed since training is refused as new, and
    the advice for a new one (map it, or mark it unlabelled) would not read it as the
    model's; ``""`` where none is."""
    hints = [(v, did_you_mean(v, known, n=1)) for v in list(new)[:3]]
    hints = [f"{v!r}: {hint}" for v, hint in hints if hint]
    if not hints:
        return ""
    return (
        f"({'; '.join(hints)} A category renamed since training is read as the model's only "
        "under its training name: rename it back.) "
    )


def with_labels_column(adata: AnnData, registry: dict) -> AnnData:
    """New cells without the model's labels column, or with labels it was not trained with,
    read as unlabelled: on an AnnData that shares ``adata``'s matrices, so the caller's obs
    stays as it is (``adata`` itself when every label is known or the model has no labels).
    The model's encoder does not read labels, so latents, clusters and translations of such
    cells are what they would be for unlabelled ones."""
    key, unlabelled, known = _label_state(registry)
    if key is None:
        return adata
    if key in adata.obs:
        values = adata.obs[key].astype(str)
        missing = adata.obs[key].isna().to_numpy()  # no label (NaN): unlabelled, not "nan"
        new = ~values.isin(known).to_numpy() | missing
        # Labels known by name but of another type (0 for "0"): scvi-tools' transfer said
        # "Category 0 not found in source registry"; they are read as the model's own.
        state = registry["field_registries"]["labels"]["state_registry"]
        own = {str(v): v for v in [*state["categorical_mapping"], unlabelled]}
        given = pd.unique(np.asarray(adata.obs[key][~new], dtype=object))
        retyped = any(isinstance(v, str) != isinstance(own[str(v)], str) for v in given)
        if not new.any() and not retyped:
            return adata
        if retyped and adata.isbacked:
            refuse_other_type(f"adata.obs[{key!r}]", list(own.values()), given, "its labels")
        names = sorted(set(values[new & ~missing]))
        if new.any() and adata.isbacked:
            what = f"labels the model was not trained with: {names[:5]}" if names else ""
            what += (" and " * bool(names) + "missing labels (NaN)") * bool(missing.any())
            raise ValueError(
                f"adata.obs[{key!r}] holds {what}. Mark those cells unlabelled "
                f"({unlabelled!r}) to have them predicted."
            )
        if names:
            warn_user(
                f"{int((new & ~missing).sum())} cells carry labels the model was not trained with "
                f"({names[:5]}, in adata.obs[{key!r}]); they are read as unlabelled "
                f"({unlabelled!r}), as cells whose label the model predicts."
            )
        column = values.map(own).where(~new, unlabelled).to_numpy()
    elif adata.isbacked:
        raise ValueError(
            f"{_lacks(adata, key)}, the model's labels column. Add it: "
            f"adata.obs[{key!r}] = {unlabelled!r} marks every cell unlabelled."
        )
    else:
        column = unlabelled
    return with_column(adata, key, column)


def check_labels_to_load(adata: AnnData, registry: dict) -> AnnData:
    """An AnnData a saved model is loaded with becomes the model's own: its labels column
    must hold labels the model knows. Without the column (a query mapped without labels),
    the model is loaded onto a copy sharing ``adata``'s matrices with every cell unlabelled
    (:func:`with_labels_column`), as new cells passed to a method are read."""
    key, unlabelled, known = _label_state(registry)
    if key is None:
        return adata
    if key not in adata.obs and not adata.isbacked:
        warn_user(
            f"{_lacks(adata, key)}, the labels column the model was trained with: the "
            f"model reads a copy of adata with every cell unlabelled ({unlabelled!r}); adata "
            "itself is unchanged, and model.write_to_adata() writes into it."
        )
        return with_labels_column(adata, registry)
    if key not in adata.obs:
        raise ValueError(
            f"{_lacks(adata, key)}, the labels column the model was trained with, and the "
            f"AnnData a model is loaded with becomes its own. Add it (adata.obs[{key!r}] = "
            f"{unlabelled!r} marks every cell unlabelled), or load the model with its training "
            "AnnData and pass these cells to its methods (get_latent_representation(adata), "
            "predict_labels(adata), ...), which read them as unlabelled."
        )
    new = sorted(set(adata.obs[key].dropna().astype(str)) - known)
    n_missing = int(adata.obs[key].isna().sum())
    if new or n_missing:
        labels = sorted(known - {str(unlabelled)})
        what = [f"labels the model was not trained with: {new[:5]} (its labels: {labels[:10]})"]
        what = what[: bool(new)] + [f"{n_missing} missing labels (NaN)"] * (n_missing > 0)
        raise ValueError(
            f"adata.obs[{key!r}] holds {' and '.join(what)}. {renamed_hint(new, labels)}Mark "
            f"those cells unlabelled ({unlabelled!r}) to load the model with this AnnData."
        )
    mapping = registry["field_registries"]["labels"]["state_registry"]["categorical_mapping"]
    given = pd.unique(np.asarray(adata.obs[key].dropna(), dtype=object))
    refuse_other_type(f"adata.obs[{key!r}]", list(mapping), given, "its labels")  # 0 for "0"
    return adata


@contextlib.contextmanager
def small_categories_named(
    adata: AnnData, columns: list[str], unlabelled: dict | None = None, query: bool = False
):
    """Registering ``columns`` (obs keys) with scvi-tools, whose warning for a category of
    fewer than 3 cells names its internal column and a code (twice for labels): that warning
    is replaced by one naming the user's column and values (none for a ``query``, whose
    categories the reference fixed). ``unlabelled`` maps a labels column to its unlabelled
    mark, whose cells are not counted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FEW_CELLS_WARNING)
        yield
    if query:
        return
    warn_few_cells(adata, columns, unlabelled or {})


def record_trained_categories(model, held_out=None) -> None:
    """Keep, in ``trained_categories_`` (saved with the model, passed on to its query models),
    the categories of each condition column that hold training cells of the AnnData a fit
    starts on (not of its validation and test splits, the positions ``held_out``, which give
    no gradient: a category only they held kept the weights it was built with), joined to those of
    earlier fits (a query's to its reference's): an empty category of the training column
    trains nothing; and the columns' dtypes (:func:`record_condition_dtypes`)."""
    adata = getattr(model, "_adata", None)
    if adata is None or getattr(model, "registry_", None) is None:
        return
    seen = dict(getattr(model, "trained_categories_", None) or {})
    keys = [key for key in category_mappings(model.registry_) if key in adata.obs]
    obs = adata.obs[keys]  # the condition columns only: not a copy of every column's cells
    if keys and held_out is not None and len(held_out):
        kept = np.ones(adata.n_obs, dtype=bool)  # np.setdiff1d hashed every position: 3 s at 1M
        kept[np.asarray(held_out, dtype=int)] = False
        obs = obs[kept]
    for key in keys:  # each value once made text, not each cell's
        seen[key] = sorted(set(seen.get(key, [])) | set(obs[key].drop_duplicates().astype(str)))
    model.trained_categories_ = seen
    record_condition_dtypes(model, adata, category_mappings(model.registry_))


def seen_categories(model) -> dict[str, set[str]] | None:
    """The categories that held training cells, by condition column (see
    :func:`record_trained_categories`); None for a model trained before they were kept."""
    seen = getattr(model, "trained_categories_", None)
    if seen is None or not model.is_trained_:  # an untrained query model: its fit is to come
        return None
    return {key: set(values) for key, values in seen.items()}


def refuse_other_type(column: str, known: list, given, what: str) -> None:
    """Refuse values ``given`` of ``column`` of another type than the model's ``known`` (1.0 or
    True for 1 too), with the line that converts the column (maps it: none alike as text)."""
    known = [v.item() if isinstance(v, np.generic) else v for v in known]  # numpy's to Python's
    given = [v.item() if isinstance(v, np.generic) else v for v in given]
    trained_str = all(isinstance(v, str) for v in known)
    if not len(given) or not len(known):
        return
    kind = "str" if trained_str else type(known[0]).__name__
    same_kind = trained_str == all(isinstance(v, str) for v in given)
    if same_kind:
        numbers = [v for v in given if type(v).__name__ != kind and not isinstance(v, str)]
        cast = {"int": int, "float": float, "bool": bool}.get(kind)
        if not numbers or cast is None or any(cast(v) != v for v in numbers):
            return  # 0.5 for integers (or 2 for booleans) is a new category, not a type
        if not any(v in known for v in numbers):
            return
    refuse_unmatched(column, known, given, what, kind, same_kind)
    convert = (  # astype(bool) would make every non-empty string True
        f'{column}.map({{"True": True, "False": False}})'
        if kind == "bool" and not same_kind
        else f"{column}.astype({kind})"
    )
    raise ValueError(
        f"{column} holds {what} as another type: the model was trained on {kind} values "
        f"({known[:5]}). Convert the column first, e.g. {column} = {convert}."
    )


def _column_role(registry: dict, key: str) -> str:
    """What obs column ``key`` is to the model: ZINBVAE's batch column (``batch_key``) or one
    of its categorical covariates, else a condition column (CGMDVAE's ``condition_key``)."""
    args = registry.get("setup_args", {})
    covariates = args.get("categorical_covariate_keys") or []
    if key == args.get("batch_key"):
        return "the batch column (batch_key)"
    if key == args.get("sample_key"):  # Archetypes'
        return "the sample column (sample_key)"
    if key in ([covariates] if isinstance(covariates, str) else covariates):
        return "a categorical covariate column (categorical_covariate_keys)"
    return "a condition column"


def _lacks(adata: AnnData, key) -> str:
    """``"adata.obs lacks 'treat-time' (did you mean 'treat/time'?)"``: the column the model
    registered, missing, with the closest of the user's (one renamed since, as ``deltavae fit``
    renames "/" before training: a model it saved, loaded onto its INPUT, named only its own).
    """
    hint = did_you_mean(key, user_columns(adata.obs))
    return f"adata.obs lacks {key!r}" + (f" ({hint})" if hint else "")


def check_known_categories(adata: AnnData, registry: dict, model=None) -> None:
    """The categorical obs columns a model registered exist in ``adata`` and hold only
    categories the model was trained with (and, given the ``model``, trained on cells of).

    Parameters
    ----------
    adata
        An AnnData a trained model is asked to read.
    registry
        The model's ``registry_``.
    model
        The trained model, whose AnnData tells the categories that held training cells
        (:func:`seen_categories`).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> check_known_categories(ad.AnnData(np.ones((2, 2))), {"field_registries": {}})
    """
    seen = None if model is None else seen_categories(model)
    for key, known in category_mappings(registry).items():
        if key not in adata.obs:
            raise KeyError(
                f"{_lacks(adata, key)}, {_column_role(registry, key)} the model was trained "
                f"with; add it (one of {[str(v) for v in known][:10]} per "
                + ("spot)." if "sample_key" in registry.get("setup_args", {}) else "cell).")
            )
        n_missing = int(adata.obs[key].isna().sum())
        if n_missing:
            raise ValueError(
                f"adata.obs[{key!r}] has {n_missing} missing values (NaN); give those cells one "
                f"of the training categories ({[str(v) for v in known][:10]}) or drop them."
            )
        # One pass over the column: its distinct values, compared as strings and by type.
        given = pd.unique(np.asarray(adata.obs[key], dtype=object))
        new = pd.Index([str(v) for v in given]).difference(pd.Index([str(v) for v in known]))
        numbers = not any(isinstance(v, str) for v in (*known, *given))  # 1.0 for 1: not new
        if not len(new) or numbers:
            # Same values, another type ("5" for 5): scvi-tools' transfer would say the
            # category is missing and suggest extend_categories, which is not the problem.
            refuse_other_type(f"adata.obs[{key!r}]", known, given, "the training categories")
        if len(new):
            # A classmethod of the model's class, of the model or of its saved directory.
            name = registry.get("model_name", "Model")
            how = (
                f"Map cells of a new {key} onto the model with q = {name}.load_query_data("
                f"adata, {'model' if model is not None else 'path'}) first, and call q "
                + (
                    "(a query model of this query model) on them."
                    if getattr(model, "is_query_model", False)
                    else "(the query model), not the reference model, on them."
                )
                if hasattr(getattr(import_module("deltavae.model"), name, None), "load_query_data")
                else f"{name} cannot learn a new {key} after training: fit it on all of them "
                "together, or give these cells a training category."
            )
            raise ValueError(
                f"adata.obs[{key!r}] holds categories the model was not trained with: "
                f"{new[:5].tolist()}; known: {[str(v) for v in known][:10]}. "
                f"{renamed_hint(new, known)}{how}"
            )
        untrained = sorted({str(v) for v in given} - seen[key]) if key in (seen or {}) else []
        if untrained:
            raise ValueError(
                f"adata.obs[{key!r}] holds {untrained[:5]}: a category of the training column "
                "without training cells (validation and test cells do not train), so the model "
                "learned nothing of it and cannot read these cells. Categories with training "
                f"cells: {sorted(seen[key])[:10]}. To learn it, train a model with its cells "
                "among the training cells (train_size=1.0 trains on every cell)."
            )


def refuse_untrained_query_categories(query: AnnData, registry: dict, seen: dict | None) -> None:
    """Refuse a query whose condition categories are the reference's (``registry``) but held
    no training cell of it (``seen``, its ``trained_categories_``): unused categories of a
    pandas Categorical, kept after subsetting. load_query_data took them as known, learned
    nothing of them ("nothing is left to learn") and mapped the query's cells through columns
    that never trained."""
    for key, known in category_mappings(registry).items():
        if key not in (seen or {}) or key not in query.obs:
            continue
        given = {str(v) for v in pd.unique(np.asarray(query.obs[key].dropna(), dtype=object))}
        untrained = sorted((given & {str(v) for v in known}) - set(seen[key]))
        if untrained:
            raise ValueError(
                f"The query's obs[{key!r}] holds {short_repr(untrained)}: categories of the "
                "reference's training column without training cells (unused categories of a "
                "pandas Categorical, kept after subsetting, or whose cells all fell in the "
                "reference's validation split), of which the reference learned nothing, and "
                "which the query model would not learn either. "
                + _renaming(key, list(known), untrained)
                + f"; set up later references after adata.obs[{key!r}] = "
                f"adata.obs[{key!r}].cat.remove_unused_categories()."
            )


def _renaming(key: str, known: list, untrained: list[str]) -> str:
    """Advice renaming only the ``untrained`` values of the query's ``key`` to new categories
    typed as the reference's ``known`` ones: ``'query_' + astype(str)`` renamed the trained
    ones too, and made integers strings, which load_query_data refuses as another type."""
    plain = {str(v): v.item() if isinstance(v, np.generic) else v for v in known}
    column = f"query.obs[{key!r}]"
    if all(isinstance(v, str) for v in plain.values()):
        new = {name: f"query_{name}" for name in untrained}
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in plain.values()):
        top = max(plain.values())
        new = {plain[name]: type(plain[name])(top + 1 + i) for i, name in enumerate(untrained)}
    else:  # booleans: no third value to rename them to
        drop = [plain[name] for name in untrained]
        return f"Drop those cells: query = query[~{column}.isin({drop!r})].copy()"
    return (
        "Give them names the reference does not have to learn them as new categories, e.g. "
        f"{column} = {column}.astype(object).map(lambda v: {new!r}.get(v, v))"
    )


class NoResponseError(ValueError):
    """No training group is seen under both conditions: no observed response to transfer."""


def groups_under_both(groups, is_src, is_tgt, source, target, key=None) -> list[str]:
    """The groups (one per training cell) seen under both the ``source`` and the ``target``
    condition, sorted; none raises :class:`NoResponseError`."""
    names = sorted(set(groups[is_src]) & set(groups[is_tgt]))
    if not names:
        column = "" if key is None else f" (adata.obs[{key!r}])"
        raise NoResponseError(
            f"No group of the training cells{column} is seen under both {source!r} and "
            f"{target!r}; there is no observed response to transfer."
        )
    return names


def labels_of(model, clusters: np.ndarray) -> pd.Categorical:
    """Predicted labels of cluster indices, over every cluster name, with the labels as the
    user's column holds them (integer labels stay integers, so that predictions compare equal
    to it; with novel clusters besides them, names: h5ad cannot write mixed categories),
    ordered where the labels column is and the clusters are the labels."""
    names, labels = model.cluster_names, _integer_labels(model)
    if labels is not None and len(labels) == len(names):
        names = labels
    # Ordered where the user's labels column is and the clusters are the labels.
    return ordered_as_labels(model, pd.Categorical.from_codes(clusters, categories=names))


def _integer_labels(model) -> list[int] | None:
    """The model's labels where they are integers (as its labels column holds them)."""
    from scvi import REGISTRY_KEYS

    if model.registry_["setup_args"].get("labels_key") is None:
        return None
    state = model.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
    labels = np.asarray(state.categorical_mapping[:-1])
    return labels.tolist() if labels.dtype.kind in "iu" else None


def cluster_index(model, cluster) -> int:
    """The index of ``cluster``, a name of :attr:`cluster_names` or an index; where clusters
    are named by integers (integer labels, or labels ``"1"``, ``"2"``), an integer is a name
    (``cluster=1`` for label 1 was index 1, label 2's), as in ``dv.pl.cluster_probabilities``.

    Examples
    --------
    >>> import types
    >>> cluster_index(types.SimpleNamespace(cluster_names=["0", "1"]), 0)
    0
    >>> cluster_index(types.SimpleNamespace(cluster_names=["1", "2", "novel_0"]), 1)
    0
    """
    names = model.cluster_names
    cluster = cluster.item() if isinstance(cluster, np.generic) else cluster  # np.str_('0')
    listed = short_repr(names, n=20, unit="clusters")
    if isinstance(cluster, str):
        if cluster not in names:
            hint = did_you_mean(cluster, names)  # "b" for "B", as a condition's case is told
            named = f"{hint} clusters" if hint else "clusters"
            raise ValueError(f"cluster={short_repr(cluster)} is not a cluster; {named}: {listed}.")
        return names.index(cluster)
    if isinstance(cluster, list | tuple | set | np.ndarray | pd.Series | pd.Index):
        # ["B", "T"] was "give a name or an index", as if a name were not given.
        raise ValueError(
            f"cluster={short_repr(cluster)} is several clusters; give one cluster, a name or an "
            f"index 0..{len(names) - 1} (clusters: {listed}), and call once per cluster."
        )
    integer = isinstance(cluster, int) and not isinstance(cluster, bool)
    numbered = any(name.lstrip("-").isdigit() for name in names)
    if integer and numbered and names != [str(k) for k in range(len(names))]:
        if str(cluster) not in names:
            raise ValueError(
                f"cluster={short_repr(cluster)} is not one of the clusters {listed}: where "
                "clusters are named by integers (integer labels), an integer is a name."
            )
        return names.index(str(cluster))
    if not integer or not 0 <= cluster < len(names):  # True, 2.7: read as 1, 2 before
        raise ValueError(
            f"cluster={short_repr(cluster)}: give a name or an index 0..{len(names) - 1}; "
            f"clusters: {listed}."
        )
    return int(cluster)


def label_groups(model, train: AnnData, batch_size) -> tuple[np.ndarray, np.ndarray]:
    """The group of every training cell for ``nearest_response`` without ``balance_key``,
    and which cells count: a labelled cell's label; an unlabelled cell's predicted cluster
    where no training cell carries that label (a ``novel_j`` cluster, a query model's
    unlabelled cells), and no group where cells do. The prediction would let a cell type held
    out under one condition seem seen under it through other types' cells mispredicted as it,
    and borrow their response."""
    cluster_names = np.asarray(model.cluster_names, dtype=object)
    groups = cluster_names[model.predict_clusters(train, batch_size=batch_size)]
    counted = np.ones(len(groups), dtype=bool)
    if model.label_names:
        labels = train.obs[model.registry_["setup_args"]["labels_key"]].astype(str).to_numpy()
        known = np.isin(labels, model.label_names)
        counted = known | ~np.isin(groups, labels[known])
        groups[known] = labels[known]
    return groups, counted
