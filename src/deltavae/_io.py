"""Open an atlas without loading its count matrix: backed .h5ad files and zarr stores.

anndata opens .h5ad files backed (``read_h5ad(path, backed="r")``: ``X`` stays on disk, the
layers are read into memory) but reads zarr stores whole. :func:`read_lazy` gives both the
same shape: an AnnData whose ``obs``, ``var`` and ``uns`` are in memory and whose ``X`` (and,
for a zarr store, its layers) stay on disk. scvi-tools' data loader reads minibatches from
them, so every model trains, infers and writes results without the matrix in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import pandas as pd
from anndata import AnnData
from anndata.io import read_elem, sparse_dataset, write_elem

from ._checks import short_repr
from ._file_unchanged_on_failure import file_unchanged_on_failure, remove_entry
from ._warn import warn_user

__all__ = ["read_lazy", "write_results_to_store"]


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("zarr.json", ".zgroup", ".zattrs")
    )


def _check_zarr_store(path: Path) -> None:
    """Refuse a folder (neither missing nor a file: checked before) that is no zarr store."""
    if not _is_zarr_store(path):
        raise ValueError(f"{str(path)!r} is a directory but not a zarr store (no zarr metadata).")


def dense_advice(key: str, path) -> str:
    """How to rewrite the dense matrix ``key`` (``"X"`` or a layer's name) of a zarr store
    sparse, naming it.

    Examples
    --------
    >>> dense_advice("raw", "a.zarr")[:58]
    "Rewrite it sparse: adata = anndata.read_zarr('a.zarr'); ad"
    """
    target = "adata.X" if key == "X" else f"adata.layers[{key!r}]"
    return (
        f"Rewrite it sparse: adata = anndata.read_zarr({str(path)!r}); {target} = "
        f"scipy.sparse.csr_matrix({target}); adata.write_zarr({str(path)!r}), or convert the "
        "store to .h5ad, whose X is read backed whether dense or sparse."
    )


def csc_advice(where: str) -> str:
    """Why and how to rewrite ``where`` (``"adata.X"``, ``"adata.layers['counts']"``), a count
    matrix stored CSC on disk, as CSR. It opens with scvi-tools' advice for a CSC matrix in
    memory, which the CLI rewrites as a shell command.

    Examples
    --------
    >>> csc_advice("adata.X")[64:124]
    'adata.X is stored CSC (column by column) on disk: every mini'
    """
    return (
        f"Training will be faster when sparse matrix is formatted as CSR: {where} is stored "
        "CSC (column by column) on disk: every minibatch of cells reads the whole matrix into "
        "memory, in training and in every read-out. Write it as CSR once: adata = "
        f"anndata.read_h5ad(path); {where} = {where}.tocsr(); adata.write_h5ad(path), and "
        "open that file."
    )


def _lazy_matrix(group, key: str, path: Path, layer: bool = False):
    """A sparse matrix of a zarr store as anndata's on-disk sparse dataset; a dense layer as
    the zarr array itself (refused by ``check_data`` if a model is set up on it)."""
    elem = group[key]
    encoding = elem.attrs.get("encoding-type", "")
    if encoding in ("csr_matrix", "csc_matrix"):
        return sparse_dataset(elem)
    if layer:
        return elem
    raise ValueError(
        f"{key!r} in {str(path)!r} is stored dense ({encoding or 'array'}); deltavae streams "
        f"sparse matrices from zarr stores. {dense_advice(key, path)}"
    )


def is_dense_zarr(matrix) -> bool:
    """Whether ``matrix`` is a zarr array (a dense matrix of a store :func:`read_lazy` left
    on disk), rather than a sparse dataset or an in-memory matrix."""
    return type(matrix).__module__.startswith("zarr")


def result_slots(keys: list[str]) -> list[tuple[str, str | None]]:
    """``(slot, name)`` of each key ``write_to_adata`` returned, with ``obs`` once as
    ``("obs", None)``: its columns are written together (:func:`write_obs_columns`).

    Examples
    --------
    >>> result_slots(["obsm/X", "obs/a", "obs/b", "uns/u"])
    [('obsm', 'X'), ('obs', None), ('uns', 'u')]
    """
    slots, has_obs = [], False
    for key in keys:
        slot, name = key.split("/", 1)
        if slot != "obs":
            slots.append((slot, name))
        elif not has_obs:
            slots.append(("obs", None))
            has_obs = True
    return slots


def write_obs_columns(group, obs: pd.DataFrame, keys: list[str]) -> None:
    """Write the obs columns among ``keys`` (``"obs/<name>"``) into the dataframe
    ``group["obs"]`` of an .h5ad file or zarr store, one by one: its other columns stay as the
    file holds them (obs written whole also wrote what was deleted or changed in memory only),
    but for scvi-tools' registration columns (``_scvi_batch``, ...), its internals."""
    stored = group["obs"]
    order = [str(c) for c in stored.attrs.get("column-order", [])]
    for name in [c for c in order if c.startswith("_scvi_") and c in stored]:
        remove_entry(stored, name)
    order = [c for c in order if not c.startswith("_scvi_")]
    for name in [key.split("/", 1)[1] for key in keys if key.startswith("obs/")]:
        if name in stored:
            remove_entry(stored, name)
        write_elem(stored, name, obs[name].values)
        order += [] if name in order else [name]
    stored.attrs["column-order"] = order


def _not_an_h5ad(path: Path, err: Exception) -> str:
    """Why the file ``path`` did not open as an .h5ad file (``err``: h5py's), and what opens it.

    A Cell Ranger .h5 or a loom file (HDF5 without AnnData's ``obs``) failed with h5py's raw
    ``KeyError: "Unable to synchronously open object (object 'obs' doesn't exist)"``.

    Examples
    --------
    >>> print(_not_an_h5ad(Path("a.zarr.zip"), OSError("Unable to (file signature not found)")))
    cannot read 'a.zarr.zip' as an .h5ad file (not an HDF5 file): a zipped zarr store opens ...
    >>> "scanpy.read_10x_h5(path)" in _not_an_h5ad(Path("f.h5"), KeyError("obs"))
    True
    """
    why = str(err.args[0]) if err.args else type(err).__name__
    if why.startswith("Unable to synchronously open object"):
        why = "no AnnData groups: " + why.split("(", 1)[-1].rstrip(")")
    elif "file signature not found" in why:
        why = "not an HDF5 file"
    name = path.name.lower()
    readers = {".h5": "scanpy.read_10x_h5(path)", ".loom": "anndata.io.read_loom(path)"}
    reader = next((call for end, call in readers.items() if name.endswith(end)), None)
    if name.endswith(".zip"):
        fix = "a zipped zarr store opens once unzipped: pass the folder it unzips to."
    elif name.endswith(".h5ad"):
        fix = (
            "it is not an AnnData written by anndata, or its writing stopped part way; write "
            "it again with adata.write_h5ad(path)."
        )
    else:
        fix = (
            "read_lazy opens .h5ad files and zarr stores (folders). Read it with "
            f"{reader or 'the reader of its format (scanpy.read ...)'}, write it with "
            "adata.write_h5ad(path), and open that file."
        )
    return f"cannot read {str(path)!r} as an .h5ad file ({why}): {fix}"


def read_lazy(path: str | Path) -> AnnData:
    """Open a .h5ad file or a zarr store with the count matrix left on disk.

    Parameters
    ----------
    path
        An ``.h5ad`` file (opened ``backed="r"``; ``X`` dense or sparse) or a zarr store
        written by :meth:`anndata.AnnData.write_zarr` whose ``X`` is sparse, or dense (or
        absent) beside a sparse layer (the counts) that a model is set up on.

    Returns
    -------
    An AnnData whose ``obs``, ``var`` and ``uns`` are in memory and whose ``X`` is read from
    disk a minibatch at a time. The layers of an .h5ad file are read into memory (anndata's
    backed mode keeps only ``X`` on disk; a warning names them): a model set up on a layer
    then trains from memory. To train from disk, put the counts in ``X`` or use a zarr store,
    whose layers stay on disk too (a dense layer is opened, but a model set up on it is
    refused). ``obsm``, ``varm``, ``obsp`` and ``raw`` of a zarr store are not read. Train any
    deltavae model on it as on an in-memory AnnData; results of ``write_to_adata`` go to its
    (in-memory) ``obs``/``obsm``; write them into the file or store with
    :func:`write_results_to_store` (``dv.write_results_to_store(adata, keys, path)``), or,
    of an .h5ad file, reopen it for writing and write again (``adata.file.close();
    adata.file.open(filemode="r+"); model.write_to_adata(adata)``: the results go into the
    file too).

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.read_lazy("atlas.zarr")  # doctest: +SKIP
    >>> dv.model.ZINBVAE.setup_anndata(adata)  # doctest: +SKIP
    >>> dv.model.ZINBVAE(adata).train()  # doctest: +SKIP
    """
    path = _file_path(path, "path", "read_lazy(path)")
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist.")
    if path.is_file():
        try:
            adata = ad.read_h5ad(path, backed="r")
        except (OSError, KeyError) as err:  # not HDF5; HDF5 without AnnData's groups
            raise ValueError(_not_an_h5ad(path, err)) from err
        if len(adata.layers):
            warn_user(
                f"read_lazy keeps only X of {str(path)!r} on disk (anndata's backed mode): its "
                f"layers {list(adata.layers)} are read into memory, and a model set up on one "
                "of them trains from memory (one set up on X trains from disk). If the counts "
                "are in a layer, put them in X to train from disk, or write the data as a zarr "
                "store (adata.write_zarr), whose layers read_lazy leaves on disk.",
            )
        return adata
    _check_zarr_store(path)
    import zarr

    group = zarr.open_group(path, mode="r")
    if "X" not in group and "layers" not in group:
        raise ValueError(f"the zarr store {str(path)!r} has no X and no layers: no data to read.")
    layers = {}
    if "layers" in group:
        layers = {
            name: _lazy_matrix(group["layers"], name, path, layer=True) for name in group["layers"]
        }
    # A dense X (e.g. log-normalised values) beside counts in a sparse layer is opened as it
    # is, as a dense layer is: a model set up on that layer streams it.
    counts_elsewhere = any(not is_dense_zarr(m) for m in layers.values())
    return AnnData(
        # Without X, the counts are in a layer a model is set up on (layer=...).
        X=_lazy_matrix(group, "X", path, layer=counts_elsewhere) if "X" in group else None,
        obs=read_elem(group["obs"]),
        var=read_elem(group["var"]),
        uns=read_elem(group["uns"]) if "uns" in group else None,
        layers=layers or None,
    )


def write_results_to_store(adata: AnnData, keys: list[str], path: str | Path) -> None:
    """Write the slots a model's ``write_to_adata`` filled into a zarr store or .h5ad file.

    Parameters
    ----------
    adata
        The AnnData from :func:`read_lazy` that ``write_to_adata`` wrote into.
    keys
        What ``write_to_adata`` returned (``"obsm/X_zinbvae"``, ``"obs/..."``, ...).
    path
        The zarr store or .h5ad file to write into (the one ``adata`` was read from, or a
        copy of it). An .h5ad file ``adata`` holds open read-only is reopened for the write
        and then read-only again. A failure midway leaves the file or store as it was.

    Examples
    --------
    >>> keys = vae.write_to_adata(adata)  # doctest: +SKIP
    >>> dv.write_results_to_store(adata, keys, "atlas.zarr")  # doctest: +SKIP
    """
    path = _file_path(path, "path", "write_results_to_store(adata, keys, path)")
    from ._anndata_or_folder import check_anndata  # which imports this module

    call = "write_results_to_store(adata, keys, path)"
    check_anndata(adata, "adata", call, optional=False, genes="the gene names")
    if not path.exists():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; pass the zarr store or .h5ad file the results "
            "belong to (the one read_lazy opened, or a copy of it)."
        )
    _check_keys(adata, keys)
    if path.is_file():
        _write_results_to_h5ad(adata, keys, path)
        return
    _check_zarr_store(path)
    import zarr

    stored = zarr.open_group(path, mode="r")
    _check_same_cells(adata, stored, path)
    _check_zarr_names(adata, keys, path)
    # anndata consolidates a store's metadata; edit the groups themselves, then re-consolidate.
    consolidated = stored.metadata.consolidated_metadata is not None
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    from .model._scanpy_keys import sync_scanpy_keys
    from .model._stale_labels import remove_stale_labels_in_store

    with file_unchanged_on_failure(group):  # a failure midway: the store as it was
        for slot, name in result_slots(keys):
            if slot == "obs":
                write_obs_columns(group, adata.obs, keys)
                sync_scanpy_keys(group, adata, keys)
                continue
            if slot not in group:
                group.create_group(slot)
            if name in group[slot]:
                remove_entry(group[slot], name)
            write_elem(group[slot], name, getattr(adata, slot)[name])
        remove_stale_labels_in_store(group, adata, keys)  # as write_to_adata removed them
    if consolidated:
        zarr.consolidate_metadata(path)


def _file_path(path, name: str, call: str) -> Path:
    """``path`` as a Path, or a TypeError naming the argument and what came instead (pathlib's
    "expected str, bytes or os.PathLike object, not AnnData" named neither): an AnnData is
    in memory already, and a list where the path goes is a call's arguments out of order."""
    if isinstance(path, str | os.PathLike):
        return Path(path)
    got = "an AnnData, which is in memory already" if isinstance(path, AnnData) else None
    got = got or f"{type(path).__name__} {short_repr(path)}"
    raise TypeError(
        f"{name} must be the path of an .h5ad file or a zarr store (a str or pathlib.Path); "
        f"got {got}. Call it as {call}."
    )


def _check_keys(adata: AnnData, keys: list[str]) -> None:
    """Each key as ``write_to_adata`` returns it (``"slot/name"``) and held by ``adata``."""
    for key in [keys] if isinstance(keys, str) else keys:
        slot, _, name = str(key).partition("/")
        held = getattr(adata, slot, None) if slot in ("obs", "obsm", "varm", "uns") else None
        if held is None or name not in held:
            raise ValueError(
                f"keys holds {key!r}, which adata does not hold as 'slot/name' (obs, obsm, "
                "varm or uns): pass what write_to_adata returned, e.g. keys = "
                "model.write_to_adata(adata)."
            )


def _check_zarr_names(adata: AnnData, keys: list[str], path: Path) -> None:
    """zarr refuses keys with "/" (a cell type "L2/3 IT" as a column of a proportions table,
    an obs column): refused here, before anything is written, rather than midway."""
    for slot, name in result_slots(keys):
        value = adata.obs if slot == "obs" else getattr(adata, slot)[name]
        columns = value.columns if isinstance(value, pd.DataFrame) else []
        slashed = [str(c) for c in columns if "/" in str(c)]
        if slashed:
            where = "adata.obs" if slot == "obs" else f"adata.{slot}[{name!r}]"
            raise ValueError(
                f"{where} has columns named with '/' ({slashed[:3]}), which a zarr store "
                f"cannot hold; nothing was written to {str(path)!r}. Rename them, e.g. "
                f"{where}.columns = {where}.columns.str.replace('/', '_'), and write again."
            )


def made_unique_in_memory(stored: pd.Index, names: pd.Index, path) -> str | None:
    """Where ``names`` (an AnnData's obs_names) are the file's or store's repeated ``stored``
    names made unique in memory (``adata.obs_names_make_unique()``, as the spot models ask),
    why results are not written and how to put the names into it; else None. The refusal
    said "rewritten" or "write into the file adata was read from", which it was.

    Examples
    --------
    >>> made_unique_in_memory(pd.Index(["a", "a"]), pd.Index(["a", "a-1"]), "s.zarr")[:57]
    "adata.obs_names were made unique in memory only: 's.zarr'"
    >>> made_unique_in_memory(pd.Index(["a", "b"]), pd.Index(["b", "a"]), "s.zarr") is None
    True
    """
    from anndata.utils import make_index_unique

    from ._checks import short_repr

    if not (stored.has_duplicates and make_index_unique(stored.astype(str)).equals(names)):
        return None
    fmt = "zarr" if str(path).rstrip("/").endswith(".zarr") else "h5ad"
    close = "adata.file.close(); " if fmt == "h5ad" else ""
    return (
        f"adata.obs_names were made unique in memory only: {str(path)!r} repeats some "
        f"({short_repr(stored[stored.duplicated()][0])} ...), and results indexed by adata's "
        "names would leave it unreadable; nothing was written. Write the unique names into "
        f"it first: {close}a = anndata.read_{fmt}(path); a.obs_names_make_unique(); "
        f"a.write_{fmt}(path); then write the results into it again. Or keep them in memory: "
        "sub = adata.to_memory(); model.write_to_adata(sub)."
    )


def _check_same_cells(adata: AnnData, group, path: Path) -> None:
    """Results are written by position: the file must hold ``adata``'s cells in its order (a
    copy sorted otherwise, or of fewer cells, was rewritten without a word and corrupted)."""
    obs = group["obs"]
    stored = pd.Index(read_elem(obs[obs.attrs["_index"]]))
    if not stored.equals(pd.Index(adata.obs_names)):
        made_unique = made_unique_in_memory(stored, pd.Index(adata.obs_names), path)
        if made_unique:
            raise ValueError(made_unique)
        same = len(stored) == adata.n_obs and set(stored) == set(adata.obs_names)
        raise ValueError(
            f"{str(path)!r} holds {len(stored)} cells"
            + (" in another order" if same else "")
            + f" and adata {adata.n_obs}: results are written row by row, so they would land on "
            "other cells. Write into the file adata was read from (or a copy of it with the "
            "same cells in the same order)."
        )


def _write_results_to_h5ad(adata: AnnData, keys: list[str], path: Path) -> None:
    """The h5ad side of :func:`write_results_to_store`."""
    import h5py

    from .model._backed import _check_file_cells, _write_into_file
    from .model._stale_labels import remove_stale_labels_in_store

    own = adata.isbacked and Path(adata.filename).resolve() == path.resolve()
    # Closed (by the user): written as any other file, and left closed.
    if own and adata.file.is_open:  # HDF5 opens a file once in a process: reopen adata's
        mode = adata.file["obs"].file.mode
        adata.file.close()
        try:
            adata.file.open(filemode="r+")
        except OSError as err:  # open elsewhere: adata's own handle goes back as it was
            adata.file.open(filemode="r" if mode == "r" else "r+")
            raise ValueError(
                f"cannot reopen {str(path)!r} to write ({err}): another AnnData in this "
                "session holds it open (read_h5ad(..., backed='r')); close that one "
                "(other.file.close()) and write again."
            ) from err
        try:
            _check_file_cells(adata)  # rewritten at its path since adata was opened
            with file_unchanged_on_failure(adata.file["obs"].file):
                _write_into_file(adata, keys)
                remove_stale_labels_in_store(adata.file["obs"].file, adata, keys)
        finally:
            adata.file.close()
            adata.file.open(filemode="r" if mode == "r" else "r+")
        return
    try:
        with h5py.File(path, "r") as stored:
            _check_same_cells(adata, stored, path)
        h5 = h5py.File(path, "r+")
    except OSError as err:
        raise ValueError(f"cannot open {str(path)!r} as an .h5ad file to write: {err}") from err
    with h5, file_unchanged_on_failure(h5):
        _write_into_file(adata, keys, h5)
        remove_stale_labels_in_store(h5, adata, keys)  # as write_to_adata removed them
