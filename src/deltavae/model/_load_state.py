"""The state dict a ``load`` is about to put into the model scvi-tools builds for it.

scvi-tools' ``load`` builds the model anew (``cls(adata, **init_params)``) and then replaces its
parameters with the saved ones. A model whose ``__init__`` computes a start from the data (the
NMF or non-negative least squares start of :class:`~deltavae.model.NMFDeconv`, the candidate
spots and anchor search of :class:`~deltavae.model.Archetypes`) read the data and fitted it at
every load, seconds on large data, only to discard the result. ``__init__`` asks
:func:`saved_state` and, inside a load, takes its shapes from the saved parameters instead.

The model file is read once per load (:func:`one_read`): ``read_saved`` checked it and
scvi-tools' ``load`` then read the whole of it from disk again (``torch.load`` twice, three
times for NMFDeconv's and SpatialImputer's ``load``, which read its genes first), its
parameters held twice in memory meanwhile. So are a saved reference's by ``load_query_data``
(deltavae's checks, then scvi-tools' ``_get_loaded_data``) and ``prepare_query_anndata``
(its checks, then scvi-tools' gene reads, up to three); the parameters are given on the
device scvi-tools asked ``torch.load`` for (``map_location``), as it pads them against a
module already there.
"""

from __future__ import annotations

import copy
import functools
import os
from contextlib import contextmanager
from contextvars import ContextVar

_LOADING: ContextVar[tuple[type, dict] | None] = ContextVar("deltavae_loading", default=None)

#: The model files read in the current load, by path: ``(attr_dict, var_names, state)``.
_READS: ContextVar[dict | None] = ContextVar("deltavae_reads", default=None)


@contextmanager
def one_read():
    """Within the block (a load), each model file is read from disk once: ``read_saved``
    keeps what it read (:func:`keep_read`) and gives it again (:func:`kept_read`), and
    scvi-tools' ``load`` takes it instead of ``torch.load`` (:func:`_held_or_read`). A block
    inside another uses the outer one's reads."""
    if _READS.get() is not None:
        yield
        return
    _hold_scvi_reads()
    token = _READS.set({})
    try:
        yield
    finally:
        _READS.reset(token)


def reads_once(load):
    """A ``load`` (a classmethod's function) run in a :func:`one_read` block."""

    @functools.wraps(load)
    def wrapped(cls, *args, **kwargs):
        with one_read():
            return load(cls, *args, **kwargs)

    return wrapped


def _file_key(dir_path, prefix) -> str:
    """The model file of ``dir_path`` and ``prefix``, as one string whatever the spelling."""
    folder = os.path.realpath(os.path.expanduser(os.fspath(dir_path)))
    return os.path.join(folder, f"{prefix or ''}model.pt")


def kept_read(dir_path, prefix) -> tuple | None:
    """What ``read_saved`` read of the model file in this :func:`one_read` block, or ``None``."""
    reads = _READS.get()
    return None if reads is None else reads.get(_file_key(dir_path, prefix))


def keep_read(dir_path, prefix, saved: tuple) -> None:
    """Keep ``read_saved``'s checked read of the model file for the rest of the block."""
    reads = _READS.get()
    if reads is not None:
        reads[_file_key(dir_path, prefix)] = saved


def _held_or_read(original):
    """scvi-tools' ``_load_saved_files`` that, for a file read in this :func:`one_read`
    block, gives that read (its dicts copied: scvi-tools pops the registry and the Pyro store
    from them, and sets a query up on the registry, copied whole; the parameters on
    ``map_location``, as ``torch.load`` gives them; the AnnData saved with it read as
    scvi-tools reads it) instead of reading the file again; else (outside a load, another
    file) scvi-tools' own."""

    @functools.wraps(original)
    def read(dir_path, load_adata, prefix=None, map_location=None, backup_url=None):
        saved = kept_read(dir_path, prefix)
        data = os.path.join(os.fspath(dir_path), f"{prefix or ''}adata.h5ad")
        if saved is None or (load_adata and not os.path.exists(data)):
            return original(
                dir_path,
                load_adata,
                prefix=prefix,
                map_location=map_location,
                backup_url=backup_url,
            )
        import anndata

        attr_dict, var_names, state = saved
        # scvi-tools sets a query up against the saved registry (extend_categories): the
        # checked read's stays as saved for the caller's comparisons. (Not the rest: the
        # init_params_ may hold a reference's counts, one array with the module's buffer.)
        attr_dict = {**attr_dict, "registry_": copy.deepcopy(attr_dict["registry_"])}
        adata = anndata.read_h5ad(data) if load_adata else None
        if map_location is not None:  # where torch.load would have put them (the device)
            state = {k: v.to(map_location) if hasattr(v, "to") else v for k, v in state.items()}
        return attr_dict, var_names, dict(state), adata

    read.deltavae_held = True
    return read


def _hold_scvi_reads() -> None:
    """scvi-tools' ``load``, ``load_query_data`` and ``prepare_query_anndata`` read through
    :func:`_held_or_read` (once installed, they read as before outside a :func:`one_read`
    block)."""
    from scvi.model.base import _archesmixin, _base_model

    for module in (_base_model, _archesmixin):
        if not getattr(module._load_saved_files, "deltavae_held", False):
            module._load_saved_files = _held_or_read(module._load_saved_files)


@contextmanager
def loading_state(cls: type, state: dict):
    """Within the block, ``cls``'s ``__init__`` is building the model ``state`` will fill."""
    token = _LOADING.set((cls, state))
    try:
        yield
    finally:
        _LOADING.reset(token)


def saved_state(model) -> dict | None:
    """The saved parameters (CPU tensors, by name) that will replace ``model``'s when it is
    being built by a load, else ``None`` (a new model, which computes its start).

    Examples
    --------
    >>> class M:
    ...     pass
    >>> saved_state(M()) is None
    True
    >>> with loading_state(M, {"w": 1}):
    ...     saved_state(M())
    {'w': 1}
    """
    loading = _LOADING.get()
    return loading[1] if loading is not None and type(model) is loading[0] else None
