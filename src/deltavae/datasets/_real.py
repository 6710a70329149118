"""Loaders for real datasets: two embedded in the package and the larger shared ones.

The shared datasets live in a data folder (``shared/data`` in the project layout) that is not part
of the package. Nothing is downloaded: a loader finds the folder, reads the ``.h5ad`` file and
harmonises a few column names so that every dataset uses ``cell_type`` and ``condition`` where it
has them.
"""

from __future__ import annotations

import gzip
import os
from importlib.resources import as_file, files
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._close_names import did_you_mean
from .._docs import doc_data_dir, doc_params
from .._warn import warn_user
from ._data_files import _FILES, _PAIR_FILES, _check_data_dir, _resolve_file

_KANG_SCGEN_CONDITIONS = {"control": "ctrl", "stimulated": "stim"}

_MNIST_LABELS = "t10k-labels-idx1-ubyte.gz"
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_float_counts(adata: ad.AnnData) -> ad.AnnData:
    """Store X as CSR float32; the files keep int32 only because it compresses better."""
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def _read_embedded(filename: str) -> ad.AnnData:
    resource = files("deltavae.datasets") / "data" / filename
    with as_file(resource) as path:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"embedded dataset {filename!r} is missing from the installed package at {path}; "
                "reinstall deltavae"
            )
        adata = ad.read_h5ad(path)
    return _as_float_counts(adata)


def _read_shared(relpath: str, data_dir: str | os.PathLike | None) -> ad.AnnData:
    path = _resolve_file(relpath, data_dir)
    try:
        adata = ad.read_h5ad(path)
    except OSError as err:  # h5py's message does not name the file (e.g. a README as data_dir)
        raise OSError(f"could not read {str(path)!r} as an .h5ad file ({err})") from err
    return _as_float_counts(adata)


def _rename_obs(adata: ad.AnnData, mapping: dict[str, str]) -> ad.AnnData:
    present = {old: new for old, new in mapping.items() if old in adata.obs.columns}
    adata.obs = adata.obs.rename(columns=present)
    return adata


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX (MNIST) gzip file into a uint8 array shaped by its header."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path} has IDX magic number {found}; expected {magic}")
    n_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {data.size} values; its header promises shape {shape}")
    return data.reshape(shape)


# --------------------------------------------------------------------------------------------
# embedded datasets
# --------------------------------------------------------------------------------------------


def pbmc3k() -> ad.AnnData:
    """10x Genomics PBMC 3k with the Seurat tutorial's cell-type labels (embedded).

    2,638 cells x 13,714 genes of raw UMI counts. The file ships inside the package, so this works
    offline. Each call returns a new AnnData object.

    Returns
    -------
    anndata.AnnData
        ``X``: CSR float32 holding integer counts. ``obs``: ``cell_type`` (9 categories),
        ``seurat_clusters``, ``nCount_RNA``, ``percent.mt``. ``obsm["X_umap"]``: the Seurat UMAP.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.pbmc3k()
    >>> adata.shape
    (2638, 13714)
    >>> int(adata.obs["cell_type"].value_counts()["Naive CD4 T"])
    697
    """
    return _read_embedded("pbmc3k.h5ad")


def kang_ifnb() -> ad.AnnData:
    """Kang et al. (2018) IFN-beta-stimulated and control PBMCs, muscat subset (embedded).

    1,556 cells x 1,267 genes of raw UMI counts from 2 donors and 5 cell types. The file ships
    inside the package. Each call returns a new AnnData object.

    Returns
    -------
    anndata.AnnData
        ``X``: CSR float32 holding integer counts. ``obs``: ``condition`` (``ctrl`` 750 /
        ``stim`` 806), ``cell_type`` (5), ``donor`` (2), ``sample`` (4), all categorical.
        ``var``: ``SYMBOL``, ``ENSEMBL``. ``obsm["X_tsne"]``. ``var_names`` are muscat's:
        gene symbols, except 91 genes that muscat's file names with their Ensembl ID
        appended (``PTPRC_ENSG00000081237``, ``CD79A_ENSG00000105369``).
        ``var["SYMBOL"]`` is unique here: ``adata.var_names = adata.var["SYMBOL"]`` gives
        plain symbols.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.kang_ifnb()
    >>> adata.obs["condition"].value_counts().sort_index().tolist()
    [750, 806]
    >>> "PTPRC" in adata.var_names, adata.var.loc["PTPRC_ENSG00000081237", "SYMBOL"]
    (False, 'PTPRC')
    """
    return _read_embedded("kang_ifnb.h5ad")


# --------------------------------------------------------------------------------------------
# shared datasets
# --------------------------------------------------------------------------------------------


@doc_params(parameters=doc_data_dir)
def kang_ifnb_8donors(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Kang et al. (2018) control PBMCs from 8 donors (muscat ``kang_se``).

    12,261 cells x 1,287 genes of raw UMI counts. It has control cells only, so use it for
    donor/batch covariates and reference profiles.

    {parameters}

    Returns
    -------
    anndata.AnnData
        ``obs``: ``donor`` (8), ``cell_type`` (8), ``condition`` (always ``ctrl``).
        ``var["gene_symbol"]``. var_names are Ensembl IDs. ``obsm["X_tsne"]``.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.kang_ifnb_8donors()
    >>> adata.obs["donor"].nunique()
    8
    """
    return _read_shared(_FILES["kang_ifnb_8donors"], data_dir)


@doc_params(parameters=doc_data_dir)
def kang_scgen(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Kang et al. (2018) PBMCs, the scGen validation split (counts rebuilt exactly).

    1,975 cells x 6,998 highly variable genes. ``condition`` is renamed from scGen's
    ``control``/``stimulated`` to ``ctrl``/``stim`` to match the other Kang loaders. Every cell
    is kept: a condition value other than these (none in the shared file; a file of your own
    given as ``data_dir``) is kept as it is, as a category after ``ctrl`` and ``stim``, with a
    warning naming those values; a missing one stays NaN. The row sums are over the HVGs only;
    ``obs["n_counts_all_genes"]`` holds the real library size.

    {parameters}

    Returns
    -------
    anndata.AnnData
        ``obs``: ``condition`` (``ctrl`` 936 / ``stim`` 1039), ``cell_type`` (7),
        ``n_counts_all_genes``, ``n_genes_all_genes``. ``obsm``: ``X_umap``, ``X_tsne``.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.kang_scgen()
    >>> sorted(adata.obs["condition"].cat.categories)
    ['ctrl', 'stim']
    """
    adata = _read_shared(_FILES["kang_scgen"], data_dir)
    raw = adata.obs["condition"]
    condition = raw.astype(str).map(lambda c: _KANG_SCGEN_CONDITIONS.get(c, c)).where(raw.notna())
    if other := sorted(set(condition.dropna()) - {"ctrl", "stim"}):  # were made NaN in silence
        warn_user(f"kang_scgen: condition values other than control/stimulated, {other}, kept.")
    adata.obs["condition"] = pd.Categorical(condition, categories=["ctrl", "stim", *other])
    return adata


@doc_params(parameters=doc_data_dir)
def kang_harmony(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Kang et al. (2018) PBMCs, 1,000 control + 1,000 stimulated cells (harmony's ``pbmc_stim``).

    2,000 cells x 9,015 genes of raw UMI counts. ``cell_type`` and ``donor`` are known for 954
    control cells only and are NaN elsewhere.

    {parameters}

    Returns
    -------
    anndata.AnnData
        ``obs``: ``condition`` (``ctrl``/``stim``), ``cell_type``, ``donor``, ``barcode``.

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.kang_harmony()
    >>> int(adata.obs["cell_type"].notna().sum()), adata.n_vars
    (954, 9015)
    """
    return _read_shared(_FILES["kang_harmony"], data_dir)


@doc_params(parameters=doc_data_dir)
def mesc(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Mouse ES cells in 3 culture conditions x 2 batches (Kolodziejczyk et al. 2015).

    200 cells x 1,047 genes of SMART-seq *read* counts (not UMIs), so they are heavily
    over-dispersed. ``culture_condition`` is renamed to ``condition``.

    {parameters}

    Returns
    -------
    anndata.AnnData
        ``obs``: ``condition`` (``2i``, ``a2i``, ``lif``) and ``batch`` (``batch2``, ``batch3``).

    Examples
    --------
    >>> import deltavae as dv
    >>> adata = dv.datasets.mesc()
    >>> adata.obs["condition"].value_counts().sort_index().tolist()
    [60, 73, 67]
    """
    adata = _read_shared(_FILES["mesc"], data_dir)
    return _rename_obs(adata, {"culture_condition": "condition"})


@doc_params(parameters=doc_data_dir)
def mob_spatial(data_dir: str | os.PathLike | None = None) -> ad.AnnData:
    """Mouse olfactory bulb, Spatial Transcriptomics (Stahl et al. 2016, STdeconvolve copy).

    262 spots x 15,928 genes of raw counts, with the histological layer of each spot.

    {parameters}

    Returns
    -------
    anndata.AnnData
        ``obs["layer"]`` (5 layers; NaN for 2 spots) and ``obsm["spatial"]`` (x/y coordinates).

    Examples
    --------
    >>> import deltavae as dv
    >>> spots = dv.datasets.mob_spatial()
    >>> spots.obsm["spatial"].shape
    (262, 2)
    """
    return _read_shared(_FILES["mob_spatial"], data_dir)


def spatial_reference_pair(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[ad.AnnData, ad.AnnData]:
    """Load a spatial dataset and its annotated single-cell reference (RCTD/spacexr toys).

    The two share only part of their genes (hippocampus 124, lymph node 558 of the spatial
    genes; cerebellum and hypothalamus all). Pass both whole to
    :meth:`deltavae.model.NMFDeconv.from_reference` or
    :meth:`deltavae.model.SpatialImputer.from_reference`, which match the genes by name: do
    not intersect ``var_names`` first, since the imputer imputes the reference's genes the
    spots lack (hide some spot genes to test it, as its ``cross_validate`` does). The
    reference's total count over all genes is in ``obs["nUMI_all_genes"]``. The cerebellum
    reference's ``nUMI`` column is renamed to that name.

    Parameters
    ----------
    name
        One of ``"cerebellum"`` (Slide-seq), ``"hippocampus"`` (Visium),
        ``"hypothalamus"`` (MERFISH) or ``"lymphnode"`` (Visium), in any case
        (``"Hippocampus"``; ``"lymph_node"`` too).
    data_dir
        The folder holding the pair or the data root (looked up as for :func:`kang_ifnb_8donors`).

    Returns
    -------
    tuple of anndata.AnnData
        ``(spatial, reference)``. ``spatial.obsm["spatial"]`` holds coordinates and
        ``reference.obs["cell_type"]`` holds labels.

    Examples
    --------
    >>> import deltavae as dv
    >>> spots, ref = dv.datasets.spatial_reference_pair("hypothalamus")
    >>> spots.shape, ref.shape
    ((750, 134), (1308, 134))
    """
    # Any case, and "lymph_node" or "lymph node" for "lymphnode": the error listed the names.
    key = "".join(name.lower().replace("_", " ").split()) if isinstance(name, str) else None
    if key not in _PAIR_FILES:
        hint = did_you_mean(name, _PAIR_FILES, end=" ") if isinstance(name, str) else ""
        raise ValueError(
            f"unknown spatial/reference pair name={name!r}; {hint}expected one of "
            f"{sorted(_PAIR_FILES)} (in any case)"
        )
    name = key
    folder = "rctd_spatial_reference_pairs"
    _check_data_dir(data_dir, folder)
    if data_dir is not None and Path(data_dir).expanduser().is_file():
        raise ValueError(
            f"spatial_reference_pair reads two files, so data_dir must be a folder; got the "
            f"file {str(data_dir)!r}"
        )
    spatial_file, reference_file = _PAIR_FILES[name]
    spatial = _read_shared(f"{folder}/{spatial_file}", data_dir)
    reference = _read_shared(f"{folder}/{reference_file}", data_dir)
    for adata in (spatial, reference):
        _rename_obs(adata, {"nUMI": "nUMI_all_genes"})
    return spatial, reference


def mnist(data_dir: str | os.PathLike | None = None, n: int | None = None) -> ad.AnnData:
    """Load the MNIST test set (10,000 handwritten digits) as an AnnData object.

    Parameters
    ----------
    data_dir
        The folder with ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``, or the
        data root (see :func:`kang_ifnb_8donors`).
    n
        Keep only the first ``n`` images (1 to 10,000). None keeps all of them.

    Returns
    -------
    anndata.AnnData
        ``X``: dense float32 pixel intensities in [0, 1], 784 variables named ``px_<row>_<col>``.
        ``obs["digit"]``: categorical with categories ``"0"`` to ``"9"``.

    Examples
    --------
    >>> import deltavae as dv
    >>> digits = dv.datasets.mnist(n=500)
    >>> digits.shape
    (500, 784)
    """
    is_int = isinstance(n, (int, np.integer)) and not isinstance(n, bool)
    if n is not None and (not is_int or n < 1):  # before the files: said with or without them
        raise ValueError(f"n={n!r} must be an integer from 1 to 10000 (or None for all)")
    if isinstance(data_dir, str | os.PathLike) and Path(data_dir).name == _MNIST_LABELS:
        data_dir = Path(data_dir).parent  # the labels file: read as images, "magic number 2049"
    images_path = _resolve_file(_FILES["mnist"], data_dir)
    # The label file always sits next to the image file, whatever form data_dir took.
    labels_path = images_path.parent / _MNIST_LABELS
    if not labels_path.is_file():
        raise FileNotFoundError(f"MNIST labels not found next to the images: {labels_path}")
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST has {images.shape[0]} images but {labels.shape[0]} labels; expected equal"
        )
    if n is not None:
        if n > images.shape[0]:
            raise ValueError(f"n={n!r} must be an integer from 1 to {images.shape[0]}")
        images, labels = images[: int(n)], labels[: int(n)]
    n_rows, n_cols = images.shape[1:]
    X = images.reshape(images.shape[0], n_rows * n_cols).astype(np.float32) / 255.0
    obs = pd.DataFrame(
        {"digit": pd.Categorical(labels.astype(str), categories=[str(d) for d in range(10)])},
        index=[f"mnist_{i}" for i in range(images.shape[0])],
    )
    var = pd.DataFrame(index=[f"px_{r}_{c}" for r in range(n_rows) for c in range(n_cols)])
    return ad.AnnData(X=X, obs=obs, var=var)
