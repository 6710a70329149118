"""A model's setup taken back on an AnnData that another model was set up on since.

Every ``setup_anndata`` on an AnnData (another deltavae model's, ``scvi.model.SCVI``'s)
rewrites the columns scvi-tools reads (``obs["_scvi_batch"]``, ``obs["_scvi_labels"]``, ...)
and marks the AnnData as last set up by it (``uns["_scvi_manager_uuid"]``). Before a model
reads its own AnnData, scvi-tools registers it again with the model's own setup, from the
columns the user named. When that fails (a column the model was set up with was removed
since, a layer deleted), scvi-tools had already let go of the AnnData: the model answered
"AnnData object not registered" at every later call, even with the column restored.

numpy's global generator is left as it was: scvi-tools' count check draws rows from it at
every registration, so a seeded differential expression (which draws cells from it) gave
another table when another model had been set up on the AnnData since its last call.
"""

from __future__ import annotations

import contextlib
import copy
import uuid

import numpy as np
import pandas as pd
from scvi.data._constants import _MANAGER_UUID_KEY, _SCVI_UUID_KEY

from .._checks import short_repr
from ._registered_columns import changed_columns, check_registered_columns


def _setup_summary(registry: dict) -> str:
    """The arguments the model was set up with, as a user would type them."""
    args = registry.get("setup_args") or {}
    given = {k: v for k, v in args.items() if v is not None and v != [] and k != "kwargs"}
    return ", ".join(f"{k}={short_repr(v)}" for k, v in given.items()) or "no arguments"


def take_back_setup(model, trained: bool = False) -> None:
    """Register ``model``'s own AnnData again with its setup when another setup replaced it
    (:func:`take_back`); ``trained``: a model that reads no labels (:func:`_labels_unread`)."""
    manager = getattr(model, "_adata_manager", None)
    if manager is not None:
        take_back(manager, type(model).__name__, trained=trained)


@contextlib.contextmanager
def _labels_unread(adata, registry: dict):
    """A trained model's labels column while its setup is registered again: labels it was
    not trained with (cells labelled since, by a clustering or by its own clusters' names),
    missing labels and a removed column read as unlabelled, and labels of another type (0
    for "0") as its own; the user's column put back after. Once trained, a model reads no
    labels, and reads its AnnData with such a column; after another model's setup, scvi-tools'
    transfer refused it: "Category novel_1 not found in source registry"."""
    from ._labels import _label_state  # it imports this module's neighbours

    key, unlabelled, known = _label_state(registry)
    given = None if key is None else adata.obs.get(key)
    if key is None or (given is not None and not _needs_relabel(given, registry, known)):
        yield
        return
    if given is None:
        adata.obs[key] = np.full(adata.n_obs, unlabelled, dtype=object)
    else:
        values = given.astype(str)
        new = ~values.isin(known).to_numpy() | given.isna().to_numpy()
        state = registry["field_registries"]["labels"]["state_registry"]
        own = {str(v): v for v in [*state["categorical_mapping"], unlabelled]}
        adata.obs[key] = values.map(own).where(~new, unlabelled).to_numpy()
    try:
        yield
    finally:
        if given is None:
            del adata.obs[key]
        else:
            adata.obs[key] = given


def _needs_relabel(given, registry: dict, known: set[str]) -> bool:
    """Whether a labels column holds labels a transfer of ``registry`` refuses: unknown,
    missing, or known by name but of another type."""
    values = given.astype(str)
    if given.isna().any() or not values.isin(known).all():
        return True
    state = registry["field_registries"]["labels"]["state_registry"]
    own = {str(v): v for v in [*state["categorical_mapping"], state["unlabeled_category"]]}
    present = pd.unique(np.asarray(given, dtype=object))
    return any(isinstance(v, str) != isinstance(own[str(v)], str) for v in present)


def check_setup_columns(manager, registry: dict, name: str, of=None) -> None:
    """Before a model takes ``manager`` (at build, or a transfer): its setup taken back where
    another model's replaced it (scvi-tools' codes of that one's columns were refused as the
    user's column "changed after setup_anndata"), then its columns checked
    (:func:`~deltavae.model._registered_columns.check_registered_columns`)."""
    take_back(manager, name)
    check_registered_columns(manager.adata, registry, name, of=of)


def take_back_read(model, adata) -> None:
    """Before ``model`` reads ``adata``, an AnnData other than its own that it registered at
    an earlier read (kept by scvi-tools under the AnnData's id): its registration taken back
    (:func:`take_back`) where another model was set up on it since or scvi-tools' codes and
    ids were dropped from it since; scvi-tools answered "_scvi_batch is not a valid column
    in adata.obs", or a bare KeyError: '_scvi_manager_uuid'."""
    store = type(model)._per_instance_manager_store.get(getattr(model, "id", None), {})
    manager = store.get(adata.uns.get(_SCVI_UUID_KEY)) if adata is not None else None
    if manager is not None and manager.adata is adata:
        # A column changed in place since (adata.obs["condition"] = ...): scvi-tools read
        # the codes of the first read, silently; new cells are read with their values now.
        changed = changed_columns(adata, manager.registry)
        take_back(manager, type(model).__name__, whose="this AnnData", changed=changed)


def take_back(
    manager,
    name: str,
    whose: str = "its AnnData",
    changed: list[str] | None = None,
    trained: bool = False,
) -> None:
    """Register ``manager``'s AnnData again with its setup when another setup replaced it
    (scvi-tools' ``AnnDataManager.validate``), as a transfer of the setup registered: each
    category keeps its code. scvi-tools set the AnnData up anew, from the columns as they are
    now: with its categories reordered since (``cat.reorder_categories``, ``astype`` with
    other categories), a trained model read the batches under each other's codes, silently.
    If the registration fails, the manager keeps its AnnData and the error says what to
    restore. ``name``: the model class, and ``whose`` the AnnData, for the message;
    ``changed``: obs columns whose values changed since the codes were written (new cells:
    registered again from them)."""
    adata = None if manager is None else manager.adata
    if adata is None:
        return
    lost = lost_bookkeeping(manager)
    if not lost and not changed and adata.uns.get(_MANAGER_UUID_KEY) == manager.id:
        return  # set up last by this manager: nothing to take back
    if manager._source_registry is None:  # set up by setup_anndata: its own registry
        manager._source_registry = copy.deepcopy(manager.registry)
    state = np.random.get_state()  # noqa: NPY002
    registry = copy.deepcopy(manager._registry)  # scvi-tools empties a field before its read
    unread = _labels_unread(adata, manager.registry) if trained else contextlib.nullcontext()
    try:
        with unread:
            if lost or changed:  # scvi-tools' validate() sees its own id: registers nothing
                adata.uns.setdefault(_SCVI_UUID_KEY, manager.registry[_SCVI_UUID_KEY])
                manager.adata = None
                source, kwargs = manager._source_registry, manager._transfer_kwargs
                manager.register_fields(adata, source, **kwargs)
            else:
                manager.validate()
    except (KeyError, ValueError, TypeError) as err:
        manager.adata = adata  # scvi-tools had dropped it: every later call failed
        # and had emptied the field that failed: new cells read since, transferred from
        # it, met "KeyError: 'categorical_mapping'"
        manager._registry = registry
        detail = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        was = "was" if len(lost) == 1 else "were"
        cause = (
            f"{', '.join(lost)}, which scvi-tools wrote at setup, {was} removed since"
            if lost
            else f"obs {changed} changed since the model read it"
            if changed
            else "another model was set up on it since, replacing the columns scvi-tools "
            "reads (obs['_scvi_batch'], ...)"
        )
        raise ValueError(
            f"This {name} cannot read {whose}: {cause}, and setting it up again with "
            f"this model's setup failed: {detail} Restore what the model was set up with "
            f"({_setup_summary(manager.registry)}), then call it again."
        ) from err
    finally:
        np.random.set_state(state)  # noqa: NPY002


def lost_bookkeeping(manager) -> list[str]:
    """What scvi-tools wrote into ``manager``'s AnnData at setup and the AnnData lacks now:
    the codes of the user's categorical columns (``obs["_scvi_batch"]``,
    ``obsm["_scvi_extra_categorical_covs"]``) and its ids in ``uns``. A user who drops them
    (``adata.obs = adata.obs[["cell_type", "batch"]]``, scvi-tools' keys stripped before
    writing the file) keeps the columns they are made from, so the model's setup is
    registered again from those, as :func:`take_back` does after another model's setup;
    scvi-tools answered "_scvi_batch is not a valid column in adata.obs"."""
    adata, lost = manager.adata, []
    for field in manager.registry["field_registries"].values():
        data, state = field.get("data_registry", {}), field.get("state_registry", {})
        slot, key = data.get("attr_name"), data.get("attr_key")
        derived = "categorical_mapping" in state or "mappings" in state  # codes of a column
        if derived and slot in ("obs", "obsm") and key not in getattr(adata, slot):
            lost.append(f"{slot}[{key!r}]")
    lost += [f"uns[{key!r}]" for key in (_SCVI_UUID_KEY, _MANAGER_UUID_KEY) if key not in adata.uns]
    return lost


def new_model_id(model) -> None:
    """Give a copy of a model (``copy.deepcopy``, a pickle loaded) an id of its own.

    scvi-tools keys the AnnDatas registered with a model by the model's id; a copy kept the
    original's, so its registrations replaced the original's, and reading both gave the
    user's AnnData a new scvi-tools id: a model built on it since was refused ("It appears
    the AnnData object has been setup with a different model"), its setup unchanged.
    """
    if "id" in vars(model):
        model.id = str(uuid.uuid4())


def fresh_copy_id(cls, adata_manager) -> None:
    """Give an AnnData set up for ``cls`` an id of its own where it holds another's: a copy
    (``adata.copy()``, a subset's copy, a file read again) keeps ``uns["_scvi_uuid"]``, so its
    setup replaced the original's in scvi-tools' store, a model built on the original was
    refused ("a copy of it was set up since"), and reading the original with a model of the
    copy gave it a new id ("It appears the AnnData object has been setup with a different
    model"), its setup unchanged."""
    adata = adata_manager.adata
    known = cls._setup_adata_manager_store.get(adata.uns.get(_SCVI_UUID_KEY))
    if known is not None and known.adata is not None and known.adata is not adata:
        adata.uns[_SCVI_UUID_KEY] = adata_manager.registry[_SCVI_UUID_KEY] = str(uuid.uuid4())
