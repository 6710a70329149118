"""The obs columns a model registered at ``setup_anndata`` (a covariate, a condition, the
labels): one changed or removed since is refused, as scvi-tools would read the codes it wrote
then, and results that would overwrite one are refused."""

from __future__ import annotations

import gc
from importlib import import_module

import numpy as np
import pandas as pd

from .._warn import warn_user
from ._live_models import live_registrations
from ._read_calls import read_call
from ._training_checks import rows_unit


def _registered_columns(registry: dict):
    """(obs column, registered codes' place, categories) of each categorical field."""
    for field in registry["field_registries"].values():
        data, state = field.get("data_registry", {}), field.get("state_registry", {})
        if "categorical_mapping" in state and data.get("attr_name") == "obs":
            if state.get("original_key") != data["attr_key"]:  # not scvi-tools' stand-in
                yield (
                    state["original_key"],
                    ("obs", data["attr_key"], None),
                    state["categorical_mapping"],
                )
        for key, mapping in state.get("mappings", {}).items():
            if data.get("attr_name") == "obsm":
                yield key, ("obsm", data["attr_key"], key), mapping


def check_registered_columns(
    adata, registry: dict, model: str, trained: bool = False, of=None
) -> None:
    """Refuse an obs column changed after ``setup_anndata``: scvi-tools reads the codes it
    wrote then (``obs["_scvi_batch"]``, ...), so a model would train on the old values, and
    a ``trained`` one's read-outs would come from them (not from the labels: they train only,
    so a trained model's labels column may be filled in with its predictions). ``of``: the
    model object, whose rows (cells, spots) and read-out the message names."""
    unit = rows_unit(of)
    labels = registry["setup_args"].get("labels_key")
    for key, (slot, attr_key, column), mapping in _registered_columns(registry):
        if trained and key == labels:
            continue  # read in training only: adata.obs[labels] = model.predict() is fine then
        store = getattr(adata, slot)
        if key not in adata.obs and attr_key in store and not trained:
            # scvi-tools trained on its copy of the removed column ("condition": a KeyError)
            raise ValueError(
                f"adata.obs lacks {key!r}, which {model}.setup_anndata registered: it was "
                f"removed since. Restore it, or call {model}.setup_anndata again without it."
            )
        if key not in adata.obs or attr_key not in store:
            continue  # a trained model reads its copy (the labels are not read)
        changed = _changed_cells(adata, key, store, attr_key, column, mapping)
        if changed:
            fix = (
                f"To read the {unit}s with their values now, pass a copy as new {unit}s (e.g. "
                f"{read_call(of, 'adata.copy()')}, model.write_to_adata(copy)); "
                "or restore the column."
                if trained
                else f"Call {model}.setup_anndata on it again, then build the model."
            )
            raise ValueError(
                f"adata.obs[{key!r}] changed after setup_anndata: {changed} of {adata.n_obs} "
                f"{unit}s hold another value than the one registered, which the model would "
                "read. " + fix
            )


def _changed_cells(adata, key, store, attr_key, column, mapping) -> int:
    """How many cells' ``adata.obs[key]`` differs from the codes scvi-tools registered."""
    registered = store[attr_key] if column is None else store[attr_key][column]
    values = adata.obs[key].astype("category")
    lookup = pd.Index(np.asarray(mapping).astype(str)).get_indexer(
        values.cat.categories.astype(str)
    )
    codes = values.cat.codes.to_numpy()
    now = np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1)
    return int((now != np.asarray(registered)).sum())


def changed_columns(adata, registry: dict) -> list[str]:
    """The obs columns registered (covariates, conditions, labels) whose values in ``adata``
    differ now from the codes scvi-tools wrote for them (:func:`check_registered_columns`
    refuses them in a model's own AnnData; new cells are registered again from them)."""
    changed = []
    for key, (slot, attr_key, column), mapping in _registered_columns(registry):
        store = getattr(adata, slot)
        if key in adata.obs and attr_key in store:
            if _changed_cells(adata, key, store, attr_key, column, mapping):
                changed.append(key)
    return changed


def refuse_overwriting_read_columns(registry: dict, written: list[str], key_added: str) -> None:
    """Refuse results that would replace an obs column the model reads (its labels, a
    condition): set up on last run's ``cgmdvae_cluster`` as labels, ``write_to_adata``
    replaced the curated labels by the predictions, and the model refused the AnnData since."""
    read = {str(key) for key, *_ in _registered_columns(registry)}
    clash = [column for column in written if column in read]
    if clash:
        raise ValueError(
            f"write_to_adata would write obs[{clash[0]!r}], a column the model reads (set up "
            f"as its labels or a condition): its values would be replaced by the model's "
            f"results. Pass another key_added, e.g. key_added={key_added + '_new'!r}."
        )


def warn_changing_others_columns(model, adata, columns: dict, key_added: str) -> None:
    """Warn where results (``columns``: obs column -> values) would change an obs column that
    another deltavae model set up on ``adata`` reads: scvi-tools keeps each class's setups by
    the AnnData's id (``uns["_scvi_uuid"]``), its models' too. A ZINBVAE set up with
    ``batch_key="cgmdvae_cluster"`` refused the AnnData after a CGMDVAE wrote other clusters
    there, without a word at the write."""
    found = _changed_read_column(model, adata, columns)
    if found is not None:
        gc.collect()  # a model deleted but in a reference cycle: its setup let go now
        found = _changed_read_column(model, adata, columns)
    if found is not None:
        name, given, column = found
        warn_user(
            f"write_to_adata changes obs[{column!r}], which the {name} set up on this "
            f"AnnData reads ({given}={column!r}): that model will refuse the AnnData after "
            "(its column changed since its setup). Write these results under another "
            f"key_added, e.g. key_added={key_added + '_new'!r}."
        )


def _changed_read_column(model, adata, columns: dict) -> tuple[str, str, str] | None:
    """(class, setup argument, column) of the first obs column among ``columns`` that the
    results would change and another model alive, set up on ``adata``, reads; else None."""
    present = [c for c in columns if c in adata.obs]
    for name, args in _other_setups(model, adata) if present else ():
        for column in present:
            given = [k for k, v in args.items() if v == column or _holds(v, column)]
            if given and _differs(adata.obs[column], columns[column]):  # only then: a pass
                return name, given[0], column
    return None


def _holds(value, column) -> bool:
    return isinstance(value, list | tuple) and column in value


def _differs(old: pd.Series, new) -> bool:
    """Whether ``new`` values would change the column ``old`` (compared as text)."""
    new = pd.Series(np.asarray(new, dtype=object), index=old.index)
    return bool((old.astype(object).astype(str) != new.astype(str)).any())


def _other_setups(model, adata):
    """(class name, setup arguments) of every setup of a deltavae model alive on ``adata``
    other than ``model``'s own. Not the class's latest ``setup_anndata`` (scvi-tools keeps it
    for good, the model built from it deleted or not): a model built from it since is refused
    with its own advice ("changed after setup_anndata")."""
    uuid, seen = adata.uns.get("_scvi_uuid"), set()
    own = (type(model).__name__, repr((getattr(model, "registry_", {}) or {}).get("setup_args")))
    models = import_module("deltavae.model")
    for cls in (getattr(models, name) for name in models.__all__):
        stores = [s for i, s in live_registrations(cls).items() if i != model.id]
        for store in stores:
            manager = store.get(uuid) if uuid is not None else None
            if manager is None or manager.adata is not adata:
                continue
            args = dict(manager.registry.get("setup_args") or {})
            found = (cls.__name__, repr(args))
            read = {str(key) for key, *_ in _registered_columns(manager.registry)}
            if found != own and found not in seen and read:
                seen.add(found)
                yield cls.__name__, {k: v for k, v in args.items() if _reads(v, read)}


def _reads(value, read: set[str]) -> bool:
    values = value if isinstance(value, list | tuple) else [value]
    return any(isinstance(v, str) and v in read for v in values)
