"""A backed AnnData's file around a model's calls: one the user closed is opened for the call
and closed after it, and one replaced on disk since setup is refused.

anndata reopens a closed backed file on the first read of ``X`` and leaves it open: every
read-out of a model reopened the file the user had closed (to release it: delete, rewrite or
move it) and kept it open. And anndata reopens it by name: a file written over at the same
path since setup was read as if it were the one set up, whose ``obs`` (labels, batches) and
``var`` anndata holds in memory, so read-outs and training ran on other cells or values
without a word.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import weakref
from pathlib import Path

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._training_checks import rows_unit
from ._validation import warn_user

#: id of an AnnData (the one a view views) -> (a weak reference to it, the fingerprint of its
#: on-disk matrices when it was set up or first read).
_FINGERPRINTS: dict[int, tuple[weakref.ref, dict]] = {}
_WINDOW = 64  # values read at each end of each array of a matrix on disk
#: ids of the AnnData whose files :func:`check_contents` found unchanged in the public call
#: running now (None outside one): a call checks each file once, not at each inner call
#: (differential_expression read it 5 times, translate 3 times, CGMDVAE's train twice).
_CHECKED_IN_CALL: contextvars.ContextVar[set | None] = contextvars.ContextVar(
    "deltavae_checked_in_call", default=None
)


def _whole(adata) -> AnnData | None:
    """The AnnData that holds ``adata``'s data (the one a view views), or None."""
    if not isinstance(adata, AnnData):
        return None
    return adata._adata_ref if adata.is_view else adata


def _files_closed(adatas) -> list:
    """The file managers of the backed AnnData among ``adatas`` whose file is closed but still
    where it was opened (one moved away is named by ``check_still_on_disk``)."""
    managers = []
    for adata in adatas:
        whole = _whole(adata)
        if whole is None or not whole.isbacked or whole.file.is_open:
            continue
        if Path(whole.filename).exists() and all(m is not whole.file for m in managers):
            managers.append(whole.file)
    return managers


def _opened_for_the_call(method, owner: str, inherited: bool = False):
    """``method`` with the closed backed files of its AnnData (``self``'s, those passed)
    opened for the call, in the mode they were opened with, and closed again after it."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        adatas = [*args, *kwargs.values()]
        if owner == "instance" and args:
            adatas += [vars(args[0]).get(name) for name in ("_adata", "_query_adata")]
        opened = []
        for manager in _files_closed(adatas):
            try:
                manager.open()
            except OSError:  # held by a writer: the read, if any, says so itself
                continue
            opened.append(manager)
        outermost = _CHECKED_IN_CALL.get() is None
        token = _CHECKED_IN_CALL.set(set()) if outermost else None
        try:
            return method(*args, **kwargs)
        finally:
            if token is not None:
                _CHECKED_IN_CALL.reset(token)
            for manager in opened:
                manager.close()

    call._opens_closed_files = True
    call.wraps_inherited = inherited  # the owner of the method is a class further up
    return call


def check_openable(adata: AnnData) -> None:
    """A closed backed file (one :func:`_opened_for_the_call` could not open) opens: h5py's
    "unable to lock file" (another process writes it) said nothing of what to do, and
    training said the file was closed and to reopen it, which failed the same way."""
    if adata.file.is_open or not Path(adata.filename).exists():
        return
    import h5py

    try:
        h5py.File(adata.filename, "r").close()
    except OSError as err:
        raise OSError(
            f"adata's backing file {str(adata.filename)!r} cannot be opened for reading "
            f"({err}). If another process has it open for writing (HDF5 locks such a file), "
            "close it there (or wait for it to finish) and call again."
        ) from err


#: scvi-tools' methods that return the matrix itself (for a backed file, read through its
#: handle after the call): left as they are, the file open as anndata leaves it.
_RETURNS_HANDLES = frozenset({"get_from_registry"})


def open_files_for_calls(cls) -> None:
    """Wrap ``__init__`` and every public method of the model class ``cls`` (its own and
    inherited, class and static methods too) with :func:`_opened_for_the_call`."""
    for name in dir(cls):
        if name.startswith("_") and name != "__init__" or name in _RETURNS_HANDLES:
            continue  # __init__ checks the data
        attr = inspect.getattr_static(cls, name)
        inherited = name not in vars(cls)
        if isinstance(attr, classmethod | staticmethod):
            if not getattr(attr.__func__, "_opens_closed_files", False):
                kind = "class" if isinstance(attr, classmethod) else "static"
                call = _opened_for_the_call(attr.__func__, kind, inherited)
                setattr(cls, name, type(attr)(call))
        elif inspect.isfunction(attr) and not getattr(attr, "_opens_closed_files", False):
            setattr(cls, name, _opened_for_the_call(attr, "instance", inherited))


#: Decompressed an epoch (and times the values used) from which a warning says so.
_AMPLIFIED_BYTES, _AMPLIFICATION = 2**30, 8


def warn_compressed_chunks(
    manager, batch_size: int, shuffle_block_size: int | None, model=None
) -> None:
    """Warn when training would decompress far more of an on-disk count matrix than it reads
    (``model``: whose rows, cells or spots, the message names).

    A compressed chunk (gzip in an .h5ad, zstd in a zarr store) is decompressed whole to read
    one cell of it: cells shuffled one by one read about one chunk each. With chunks of many
    cells (h5py picks chunks of up to 1 MiB for an atlas) an epoch decompressed the matrix
    over and over: 12,261 cells, chunks of 262,144 values, 1 epoch 35 s against 5 s in
    memory, 10 s with ``shuffle_block_size=128``, 7 s uncompressed.
    """
    matrix = manager.get_from_registry("X")
    if shuffle_block_size is not None or isinstance(matrix, np.ndarray) or sparse.issparse(matrix):
        return
    group = getattr(matrix, "group", None)
    array = matrix if group is None else group["data"]
    compressed = getattr(array, "compression", None) or getattr(array, "compressors", None)
    if not compressed or not getattr(array, "chunks", None) or not matrix.shape[0]:
        return
    n_obs = matrix.shape[0]
    if group is not None:  # a chunk of the stored values (and their column indices)
        per_cell = array.shape[0] / n_obs
        cells = array.chunks[0] / max(per_cell, 1e-9)
        cell_bytes = per_cell * (array.dtype.itemsize + group["indices"].dtype.itemsize)
    else:  # a dense matrix: a stripe of chunks of rows across its columns
        cells, cell_bytes = array.chunks[0], matrix.shape[1] * array.dtype.itemsize
    cells = min(cells, n_obs)  # a chunk larger than the matrix holds it all
    n_chunks = max(1.0, n_obs / max(cells, 1e-9))
    batch = min(batch_size, n_obs)
    read = n_chunks * (1 - (1 - 1 / n_chunks) ** batch)  # chunks a minibatch touches
    amplification = read * cells / batch
    per_epoch = -(-n_obs // batch) * read * cells * cell_bytes
    if amplification < _AMPLIFICATION or per_epoch < _AMPLIFIED_BYTES:
        return
    unit = rows_unit(model)
    warn_user(
        f"The counts on disk are stored compressed in chunks of about {cells:,.0f} {unit}s "
        f"each, and a chunk is decompressed whole to read one {unit}: a minibatch of {batch} "
        f"{unit}s shuffled one by one decompresses chunks of about {read * cells:,.0f} {unit}s, "
        f"{amplification:.0f} "
        f"times the values it uses ({per_epoch / 2**30:.1f} GiB an epoch). Train with "
        f"shuffle_block_size={max(1, batch // 4)} (minibatches of contiguous stretches of "
        f"{unit}s)"
        + (
            ", or write the file without compression (anndata's write_h5ad compresses nothing "
            "unless given compression=)."
            if hasattr(array, "compression")
            else "."
        )
    )


def _on_disk_matrices(adata: AnnData) -> dict:
    """``adata``'s matrices read from disk: a backed file's X, a zarr store's X and layers."""
    if adata.isbacked:
        return {"X": adata.X} if "X" in adata.file else {}
    matrices = {"X": adata.X, **adata.layers}
    return {
        key: m
        for key, m in matrices.items()
        if m is not None and not (isinstance(m, np.ndarray) or sparse.issparse(m))
    }


def _zarr_folder(matrix) -> Path | None:
    """The folder of a matrix held by a zarr store on local disk (anndata's sparse dataset
    of one, or a zarr array), else None."""
    node = getattr(matrix, "group", matrix)
    root = getattr(getattr(node, "store", None), "root", None)
    if not type(node).__module__.startswith("zarr") or root is None:
        return None
    return Path(root) / node.path


def _fingerprint_of(matrix) -> tuple:
    """Shape, dtype and a digest of the first, middle and last values of each array of a
    matrix on disk (anndata's sparse dataset: data, indices, indptr; an h5py or zarr array:
    its first, middle and last rows), read from the file or store as it is now."""
    group = getattr(matrix, "group", None)
    folder = _zarr_folder(matrix)
    if folder is not None:  # opened anew: zarr keeps the metadata it read at first
        import zarr

        if not folder.exists():
            return ("missing",)
        node = zarr.open(folder, mode="r")
        group, matrix = (node, matrix) if group is not None else (None, node)
    arrays = [group[key] for key in ("data", "indices", "indptr")] if group is not None else []
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays or [matrix]:
        n = array.shape[0]
        width = _WINDOW if array.ndim == 1 else 1
        for start in (0, max(0, n // 2 - width // 2), max(0, n - width)):  # ends and middle
            digest.update(_window_bytes(array[start : start + width]))
    shapes = tuple(tuple(a.shape) for a in arrays)
    return tuple(matrix.shape), str(matrix.dtype), shapes, digest.hexdigest()


def _window_bytes(part) -> bytes:
    """The bytes of values read from a matrix: a dask array's computed (one of sparse chunks
    gave an array of objects, whose bytes are addresses: a new fingerprint at every read)."""
    if type(part).__module__.startswith("dask"):
        part = part.compute()
    arrays = (part.data, part.indices, part.indptr) if sparse.issparse(part) else (part,)
    return b"".join(np.ascontiguousarray(np.asarray(a)).tobytes() for a in arrays)


def _fingerprint(adata: AnnData) -> dict:
    return {key: _fingerprint_of(m) for key, m in _on_disk_matrices(adata).items()}


def _forget(key: int, _ref) -> None:
    _FINGERPRINTS.pop(key, None)


def record_contents(adata: AnnData | None) -> None:
    """Note what the matrices on disk of ``adata`` (backed or read lazily) hold now, for
    :func:`check_contents`; an in-memory AnnData has nothing to note."""
    whole = _whole(adata)
    if whole is None or (whole.isbacked and not whole.file.is_open):
        return
    fingerprint = _fingerprint(whole)
    if fingerprint:
        key = id(whole)
        _FINGERPRINTS[key] = (weakref.ref(whole, functools.partial(_forget, key)), fingerprint)


def check_contents(adata: AnnData | None) -> None:
    """Refuse an AnnData whose file or zarr store was replaced on disk since it was set up
    (or first read): anndata would read the new file's matrix under the old one's obs and var.
    One not seen before is noted, to be checked at its next use."""
    whole = _whole(adata)
    if whole is None or (whole.isbacked and not whole.file.is_open):
        return
    checked = _CHECKED_IN_CALL.get()
    if checked is not None and id(whole) in checked:
        return  # found unchanged earlier in this call
    ref, before = _FINGERPRINTS.get(id(whole), (None, None))
    if ref is None or ref() is not whole:
        record_contents(whole)
        return
    now = _fingerprint(whole)
    if now == before:
        if checked is not None:
            checked.add(id(whole))
        return
    changed = [k for k in before if now.get(k) != before[k]]
    matrices = _on_disk_matrices(whole)
    where, how = "the zarr store adata reads its matrices from", "dv.read_lazy(path)"
    if whole.isbacked:
        where = f"adata's backing file {str(whole.filename)!r}"
        how = "anndata.read_h5ad(path, backed='r')"
    elif all(type(matrices.get(k)).__module__.startswith("dask") for k in changed):
        # read_elem_lazy's, which reads its file by path (one in memory holds a copy)
        where = "the file adata's dask array reads (anndata's read_elem_lazy)"
        how = "read_elem_lazy it again, into a new AnnData"
    raise ValueError(
        f"{where} was replaced or rewritten since it was set up (or first read): its matrix "
        f"({', '.join(changed)}) is not the one set up, "
        "while adata still holds the obs and var of the old one, so results would pair other "
        f"cells or values with them. Open the file as it is now ({how}), set it up and pass it "
        "to the read-out, or load the saved model onto it (Model.load(saved_dir, adata=adata))."
    )
