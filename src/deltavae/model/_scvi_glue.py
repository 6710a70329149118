"""Small adapters around scvi-tools internals that every deltavae model uses."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import warnings

import numpy as np
import torch
from scvi.data._constants import _FIELD_REGISTRIES_KEY as _FIELD_REGISTRIES
from scvi.model.base import BaseModelClass
from scvi.module.base._decorators import _move_data_to_device

from .._checks import check_seed
from .._logging import DropMessages
from ._cell_selection import selected_rows
from ._live_models import forget_when_gone
from ._loader_keywords import check_loader_keywords
from ._matrices import holds_handles, to_memory
from ._modes import evaluating, in_module_dtype
from ._query_switches import refuse_learning_decoder_norms
from ._shared_setup import new_model_id
from ._training_checks import check_batch_size


def _sealed(adata_manager):
    """The manager with its field registries in a plain dict.

    scvi-tools keeps them in a ``defaultdict``: looking up a field the model never registered
    (e.g. the batch of a model without one) inserts an empty entry, and every later call on the
    model then fails with ``KeyError: 'data_registry'``. Sealed, such a lookup fails alone.
    """
    registry = adata_manager._registry
    registry[_FIELD_REGISTRIES] = dict(registry[_FIELD_REGISTRIES])
    return adata_manager


_SCVI_MODEL_LOGGER = "scvi.model.base._base_model"


@contextlib.contextmanager
def _without_message(logger_name: str, *starts: str):
    """Drop the records of one logger that hold one of ``starts``, inside the block (a
    malformed record is left to logging's own report, as the import-time filters do)."""
    target, drop = logging.getLogger(logger_name), DropMessages(starts)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


#: scvi-tools' warning, at every registration, for a category of fewer than 3 cells: it names
#: its internal column and a code (deltavae names the user's column once, at setup).
_FEW_CELLS_WARNING = r"Category .* has fewer than 3 cells"


@contextlib.contextmanager
def _transferring_quietly():
    """scvi-tools' transfer of a model's setup to a new AnnData, without what it says at every
    call that the user cannot act on: INFO records that the AnnData was not set up or looks
    like a copy, and warnings of categories with few cells (which matter to training only).

    numpy's global generator is left as it was: scvi-tools' count check draws rows from it at
    every registration, so a seeded differential expression (whose cells are drawn from it
    too) gave another table when its AnnData was registered first (a view, a copy, the
    model's own after another model read it or after unpickling)."""
    state = np.random.get_state()  # noqa: NPY002
    try:
        with (
            _without_message(
                _SCVI_MODEL_LOGGER,
                "Input AnnData not setup with scvi-tools",
                "AnnData object appears to be a copy",
            ),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message=_FEW_CELLS_WARNING)
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _picklable_state(model) -> dict:
    """A model's ``__dict__`` for pickle: without the finished run's Lightning trainer, and
    with a copy of the module whose parameters lack the weak references Pyro's parameter store
    attaches to them (``pyro.module`` attaches them again when the model next trains), on the
    CPU (:func:`restore_pickled_state` moves it back to its device where that exists); without
    the AnnData the user gave (to ``load`` onto a copy, ``load_query_data``, ``from_reference``),
    which the model writes into and reads as given: a copy of the model writes into, and reads,
    its own AnnData (``copy.adata``), as a copy of any model does. Pickled along, that AnnData
    came back as a copy of its own, which ``write_to_adata()`` filled where the user could not
    reach it (neither their AnnData nor ``copy.adata`` got the results); one read from a file
    cannot travel at all (its handle)."""
    adata = model.__dict__.get("_adata")
    if adata is not None and holds_handles(adata):
        raise TypeError(
            f"This {type(model).__name__} reads its AnnData from a file (backed or read_lazy), "
            "whose open handle cannot be pickled or copied. Save it instead: "
            f"model.save(path), then {type(model).__name__}.load(path, adata)."
        )
    state = model.__dict__.copy()
    state.pop("trainer", None)
    state.pop("_query_source", None)  # a weak reference: the copy's query is read as it is
    if state.get("_query_adata") is not None:
        state["_query_adata"] = None
    if state.get("module") is not None:
        module = state["module"]
        device = next(iter(module.parameters()), torch.empty(0)).device
        state["module"] = _other_tensors_to_cpu(copy.deepcopy(module).to("cpu"))
        state[_PICKLED_DEVICE] = str(device)
        for param in state["module"].parameters():
            param.__dict__.pop("unconstrained", None)
    return state


_PICKLED_DEVICE = "_pickled_device"


def _other_tensors_to_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with the tensors its submodules hold outside parameters and buffers (a query
    model's gradient masks, a cached batch) on the CPU too: ``.to`` moves only parameters and
    buffers, and a pickle holding a CUDA tensor cannot be loaded on a machine without one."""

    def cpu(value):
        if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
            return value.cpu()
        if type(value) in (list, tuple):
            return type(value)(cpu(v) for v in value)
        return value

    for sub in module.modules():
        for key, value in list(sub.__dict__.items()):
            sub.__dict__[key] = cpu(value)
    return module


def restore_pickled_state(model, state: dict) -> None:
    """Inverse of :func:`_picklable_state`: the module goes back to the device it was pickled
    on when this machine has it, and stays on the CPU otherwise. In another process, the
    model's AnnData is registered with it again (scvi-tools keeps that in the class); the
    copy gets an id of its own (:func:`~deltavae.model._shared_setup.new_model_id`)."""
    device = torch.device(state.pop(_PICKLED_DEVICE, "cpu"))
    model.__dict__.update(state)
    new_model_id(model)  # not the original's: its registrations are the original's
    if state.get("_adata_manager") is not None:  # view_anndata_setup failed there
        BaseModelClass._register_manager_for_instance(model, state["_adata_manager"])
        forget_when_gone(model)
    # Any kind of accelerator (CUDA, MPS, XPU): a model pickled on a Mac's GPU came back on
    # the CPU there.
    from .._rng import device_module

    kind = device_module(device.type)
    if kind is not None and (device.index or 0) < kind.device_count():
        model.module.to(device)


@contextlib.contextmanager
def obs_types_kept(model, writes: bool):
    """Writing an AnnData to .h5ad turns its string columns into categoricals in place
    (anndata's ``strings_to_categoricals``) and points a backed AnnData at the file written:
    around ``save(save_anndata=True)``, the model's AnnData (the user's) gets its own obs and
    var frames back afterwards, and a backed one its own file (it had been left naming the
    model's copy, so that reopening it for ``write_to_adata`` wrote the results there)."""
    adata = getattr(model, "_adata", None) if writes else None
    kept = None if adata is None else (adata.obs.copy(deep=False), adata.var.copy(deep=False))
    backing = adata.file.filename if adata is not None and adata.isbacked else None
    try:
        yield
    finally:
        if kept is not None:
            adata.obs, adata.var = kept
        if backing is not None:
            adata.file.filename = backing


class Picklable:
    """Pickling for joblib and multiprocessing (:meth:`save` is the lasting format)."""

    def __getstate__(self) -> dict:
        return _picklable_state(self)

    def __setstate__(self, state: dict) -> None:
        restore_pickled_state(self, state)


class _OnDevice:
    """A data loader whose minibatches arrive on a module's device, its module in eval mode
    while it is iterated (see :func:`evaluating`).

    Every torch-side pass of a deltavae model (latents, expression, translation, perturbation,
    scvi-tools' mixins) iterates a loader from :meth:`DeltaModelMixin._make_data_loader`; moving
    the tensors here, once, keeps a model trained on a GPU readable without each method
    remembering to do it. Attributes of the wrapped loader stay reachable.
    """

    def __init__(self, loader, module):
        self._loader = loader
        self._module = module

    def __iter__(self):
        device = self._module.device
        with evaluating(self._module):
            for tensors in self._loader:  # and in the module's dtype: a double one reads too
                yield in_module_dtype(_move_data_to_device(tensors, device), self._module)

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)


_FIXED_NETWORKS = (
    "the networks are scvi-tools' Encoder and DecoderSCVI with their defaults here; "
    "n_hidden, n_layers and dropout_rate are the options"
)
_FIXED_QUERY = (
    "what a query model learns is fixed here: the weights of the new categories' columns "
    "(their dispersions, a latent library's encoder), every other weight frozen, BatchNorm's "
    "statistics kept; scvi-tools' defaults of its freezing switches (freeze_expression=True, "
    "freeze_decoder_first_layer=True, freeze_batchnorm_encoder=True, freeze_classifier=True, "
    "unfrozen=False) freeze what is frozen here and are taken, a value that would let other "
    "weights learn is refused"
)
_QUERY_FREEZING = (
    "unfrozen",
    "freeze_dropout",
    "freeze_expression",
    "freeze_decoder_first_layer",
    "freeze_batchnorm_encoder",
    "freeze_batchnorm_decoder",
    "freeze_classifier",
)
#: What a model takes instead of scvi-tools' arguments it lacks, by method.
_INSTEAD = {
    "__init__": {
        "gene_likelihood": "scvi-tools' gene_likelihood is called likelihood here, e.g. "
        "{model}(adata, likelihood='nb')",
        "latent_distribution": "z is always normal here (scvi-tools' 'ln' is not offered)",
        "batch_key": "covariates are registered by setup_anndata, not by the constructor",
        "use_batch_norm": _FIXED_NETWORKS,
        "use_layer_norm": _FIXED_NETWORKS,
        "deeply_inject_covariates": _FIXED_NETWORKS,
        "batch_representation": "conditions enter the networks one-hot here",
        "linear_classifier": "scvi-tools' SCANVI classifier is CGMDVAE's cluster head "
        "q(y | z, c) here, a network on z (and the conditions); classifier_weight weighs the "
        "labelled cells' term, e.g. CGMDVAE(adata, classifier_weight=50)",
    },
    "train": {
        "load_sparse_tensor": "sparse minibatches are made dense one at a time here; there "
        "is nothing to switch on",
        "datamodule": "a model trains on its own AnnData here; open data larger than memory "
        "with dv.read_lazy and set that up",
        "adversarial_classifier": "scvi-tools' SCANVI can train an adversarial batch "
        "classifier; no deltavae model has one (CGMDVAE aligns its conditions in z, weighted "
        "by condition_alignment: CGMDVAE(adata, condition_alignment=...)): leave it out",
        "n_samples_per_label": "scvi-tools' SCANVI subsamples the labelled cells per label; "
        "CGMDVAE reads each labelled cell of the training split once an epoch, beside the "
        "unlabelled ones, their classification term weighted by classifier_weight "
        "(CGMDVAE(adata, classifier_weight=50)): leave it out",
    },
    "load": {
        "datamodule": "a model reads its own AnnData here: pass it, load(path, adata) (open "
        "data larger than memory with dv.read_lazy)",
    },
    "load_query_data": {
        **dict.fromkeys(_QUERY_FREEZING, _FIXED_QUERY),
        "transfer_batch": "transfer_batch=False refuses a query whose batches the reference "
        "lacks (scvi-tools' SysVI); here a query model learns its new categories, as under "
        "transfer_batch=True (scvi-tools' default, taken): to refuse new batches, compare "
        "the query's with the reference's before mapping it",
        **dict.fromkeys(
            ("registry", "datamodule"),
            "scvi-tools reads a registry with a datamodule in place of the query; a query "
            "model here reads an AnnData: {model}.load_query_data(query, reference_model) "
            "(open data larger than memory with dv.read_lazy)",
        ),
        "inplace_subset_query_vars": "the query's genes are aligned by name on a copy, and "
        "the query itself is left as it is",
    },
}


#: scvi-tools' ``_make_data_loader`` arguments that may be given by position, in order.
_LOADER_ARGUMENTS = ("adata", "indices", "batch_size", "shuffle", "data_loader_class")


def loader_arguments(model, args: tuple, kwargs: dict) -> dict:
    """The arguments of scvi-tools' ``_make_data_loader``, by name, its ``indices`` checked
    (see :func:`check_indices`) and, for an AnnData backed by an .h5ad file, read in their
    order.

    scvi-tools sorts each minibatch's cells of a backed file (h5py reads rows in increasing
    order) and returns them so: ``get_latent_representation(indices=[5, 1, 9])`` gave the
    rows of cells 1, 5 and 9, and ``get_normalized_expression`` labelled them 5, 1 and 9.
    Cells asked for out of file order are read into memory, in that order, instead.
    """
    if len(args) > len(_LOADER_ARGUMENTS):
        raise TypeError(f"_make_data_loader takes at most {len(_LOADER_ARGUMENTS)} arguments.")
    kwargs = {**dict(zip(_LOADER_ARGUMENTS, args, strict=False)), **kwargs}
    check_loader_keywords(kwargs, _LOADER_ARGUMENTS)  # torch's error named no read-out
    check_batch_size(kwargs.get("batch_size"))  # torch's message named no argument of ours
    if isinstance(kwargs.get("batch_size"), np.integer):  # torch's sampler takes an int only
        kwargs["batch_size"] = int(kwargs["batch_size"])
    adata, indices = kwargs.get("adata"), kwargs.get("indices")
    if adata is None:
        return kwargs
    # scvi-tools reads an array only as a mask: the loader gets positions.
    rows = kwargs["indices"] = selected_rows(adata, indices)
    if rows is None or not adata.isbacked:
        return kwargs
    if (np.diff(rows) >= 0).all():
        return kwargs
    with warnings.catch_warnings():  # a cell asked for twice is read twice
        warnings.filterwarnings("ignore", message="Observation names are not unique")
        cells = to_memory(adata[rows])
    return {**kwargs, "adata": model._validate_anndata(cells), "indices": None}


#: scvi-tools' arguments at the values that switch nothing on (SCVI's, SCANVI's defaults, or
#: what this package does anyway), by method: dropped, so that ported calls run; any other
#: value is refused by _INSTEAD.
_NO_OPS = {
    "__init__": {"latent_distribution": ("normal",), "batch_representation": ("one-hot",)},
    "train": {
        "load_sparse_tensor": (False,),
        "n_samples_per_label": (None,),
        "adversarial_classifier": (None, False),
        "datamodule": (None,),
    },
    "load": {"datamodule": (None,)},
    # unfrozen=False: scvi-tools' freezing applies (here every reference weight is frozen).
    # freeze_dropout either way: scvi-tools' query trains in eval mode (its load_query_data
    # ends in module.eval(), which Lightning 2 keeps), so dropout is off whatever its value
    # (True also sets p=0), as here. The freeze_* switches at True freeze what is frozen here
    # (the encoder's and decoder's gene and z weights, the encoder's BatchNorm, SCANVI's
    # classifier: CGMDVAE's cluster head, whose new categories' columns learn as in every
    # network); freeze_batchnorm_decoder=False only where the reference's decoder has no
    # BatchNorm (_query_switches, checked before). transfer_batch=True: new batches learn.
    "load_query_data": {
        "datamodule": (None,),
        "inplace_subset_query_vars": (False,),
        "unfrozen": (False,),
        "freeze_dropout": (False, True),
        "freeze_expression": (True,),
        "freeze_decoder_first_layer": (True,),
        "freeze_batchnorm_encoder": (True,),
        "freeze_batchnorm_decoder": (False, True),
        "freeze_classifier": (True,),
        "transfer_batch": (True,),
    },
}


def drop_scvi_no_ops(kwargs: dict, method: str = "train") -> None:
    """Remove from ``kwargs`` (of ``method``) scvi-tools' arguments given at a value that
    switches nothing on here (``load_sparse_tensor=False``, ``datamodule=None``, SCANVI's
    ``n_samples_per_label=None`` and ``adversarial_classifier=False``; the constructor's
    ``latent_distribution="normal"`` and ``batch_representation="one-hot"``;
    ``load_query_data``'s ``inplace_subset_query_vars=False``, ``unfrozen=False``,
    ``freeze_dropout``, whose query trains without dropout either way, as here, the
    ``freeze_*`` switches at their defaults, which freeze what is frozen here, and
    ``transfer_batch=True``)."""
    for name, values in _NO_OPS.get(method, {}).items():
        if name in kwargs and any(
            kwargs[name] is v or (isinstance(v, str) and kwargs[name] == v) for v in values
        ):
            del kwargs[name]


def refuse_scvi_names(method: str, model: str, names) -> None:
    """A TypeError with what to do instead, for the first of ``names`` that is one of
    scvi-tools' arguments of ``method`` this package names otherwise or decides itself."""
    hints = [name for name in names if name in _INSTEAD[method]]
    if hints:
        hint = _INSTEAD[method][hints[0]].format(model=model)
        call = f"{model}()" if method == "__init__" else f"{model}.{method}()"
        raise TypeError(f"{call} got an unexpected argument {hints[0]!r}: {hint}.")


def scvi_init_names(init):
    """``init`` (a model's ``__init__``, or its ``load_query_data``) with a hint, in place of
    Python's bare "unexpected keyword argument", for scvi-tools' arguments the model names
    otherwise."""

    @functools.wraps(init)
    def checked(first, *args, **kwargs):
        known = inspect.signature(init).parameters
        model = first.__name__ if isinstance(first, type) else type(first).__name__
        if init.__name__ == "load_query_data":  # False: a no-op where no BatchNorm decodes
            refuse_learning_decoder_norms(first, args, kwargs)
        drop_scvi_no_ops(kwargs, init.__name__)  # scvi-tools' defaults written out: run
        refuse_scvi_names(init.__name__, model, [key for key in kwargs if key not in known])
        return init(first, *args, **kwargs)

    return checked


@contextlib.contextmanager
def seeded(module, seed: int | None):
    """torch's generators seeded with ``seed`` inside, as they were outside (nothing done for
    ``None``): the CPU's, and those of the module's kind of device (every GPU's, as
    ``torch.manual_seed`` seeds them all), each forked and restored. A module on the CPU
    seeds the CPU's alone: ``torch.manual_seed`` would reseed the GPUs for good (or queue
    that for CUDA's start, where it replaced the ``scvi.settings.seed`` of a GPU model
    trained next); forking CUDA's alone left a model on MPS (or XPU) with its device's
    generator reseeded for good."""
    if seed is None:
        yield
        return
    check_seed(seed, largest=2**64 - 1)  # torch's generators alone: numpy's RandomState unused
    seed = int(seed)  # numpy's: torch takes Python integers only
    from .._rng import seeded_generators

    with seeded_generators(module.device, seed):
        yield


#: How many registrations of the copies reads make (of a view, of genes reordered, with a
#: labels column added) a model keeps. scvi-tools keeps every AnnData registered with a model
#: for the model's life: each read of a view kept one more copy of its data.
KEEP_COPIES = 3


def forget_old_copies(model, copy) -> None:
    """Register ``copy`` (an AnnData a read made) as the newest of the model's copies and
    drop the registrations of all but the newest :data:`KEEP_COPIES` (a read in progress
    holds one; reads nested in it, a few more)."""
    kept = model.__dict__.setdefault("_copies_registered", [])
    kept.append(copy.uns.get("_scvi_uuid"))
    store = model._per_instance_manager_store.get(model.id, {})
    while len(kept) > KEEP_COPIES:
        store.pop(kept.pop(0), None)
