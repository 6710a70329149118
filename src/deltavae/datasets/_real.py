"""Loaders for real datasets: two embedded in the package and the larger shared ones.

The shared datasets live in a data folder (``shared/data`` in the project layout) that is not part
of the package. Nothing is downloaded: a loader finds the folder, reads the ``.h5ad`` file and
harmonises a few column names so that every dataset uses ``cell_type`` and ``condition`` where it
has them.
"""

from __future__ import annotations

import gzip
import logging
import os
from importlib.resources import as_file, files
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._checks import short_repr
from .._docs import doc_data_dir, doc_params
from .._warn import warn_user

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "DELTAVAE_DATA"

_KANG_SCGEN_CONDITIONS = {"control": "ctrl", "stimulated": "stim"}

_PAIR_FILES = {
    "cerebellum": ("cerebellum_slideseq_spatial.h5ad", "cerebellum_snrna_reference.h5ad"),
    "hippocampus": ("hippocampus_visium_spatial.h5ad", "hippocampus_scrna_reference.h5ad"),
    "hypothalamus": ("hypothalamus_merfish_spatial.h5ad", "hypothalamus_scrna_reference.h5ad"),
    "lymphnode": ("lymphnode_visium_spatial.h5ad", "lymphnode_scrna_reference.h5ad"),
}

#: Each shared loader's file, relative to the data root.
_FILES = {
    "kang_ifnb_8donors": "kang2018_ifnb_muscat/kang_ctrl_8donors_muscat_kang_se.h5ad",
    "kang_scgen": "kang2018_ifnb_scgen/kang_ctrl_stim_scgen_valid_counts.h5ad",
    "kang_harmony": "kang2018_ifnb_harmony/kang_ctrl_stim_harmony_pbmc_stim.h5ad",
    "mesc": "mesc_kolodziejczyk2015/mesc_2batches_scmerge_example.h5ad",
    "mob_spatial": "mob_stahl2016_spatial/mob_rep_stdeconvolve.h5ad",
    "mnist": "mnist_t10k/t10k-images-idx3-ubyte.gz",
}

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


def _owner(filename: str) -> str | None:
    """The loader that reads a shared file of this name, or None for another name."""
    for loader, relpath in _FILES.items():
        if Path(relpath).name == filename:
            return f"dv.datasets.{loader}()"
    for name, pair in _PAIR_FILES.items():
        if filename in pair:
            return f"dv.datasets.spatial_reference_pair({name!r})"
    # The shared folder's copies of the embedded datasets.
    copies = {
        "pbmc3k_seurat_counts.h5ad": "pbmc3k",
        "kang_ctrl_stim_muscat_example.h5ad": "kang_ifnb",
    }
    return f"dv.datasets.{copies[filename]}()" if filename in copies else None


def _search_roots() -> list[Path]:
    """Candidate data roots, in priority order, when no ``data_dir`` is given."""
    roots: list[Path] = []
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
        if roots[-1].is_file():  # it names folders; the folders searched next hold other data
            raise NotADirectoryError(
                f"${DATA_ENV_VAR} is {env!r}, a file; it names the data root (the folder "
                "holding the dataset folders) or a dataset's folder. Set it to a folder, e.g. "
                f"{str(roots[-1].parent)!r}, or pass the file itself: data_dir={env!r}."
            )
        if not roots[-1].is_dir():  # a typo would otherwise read another folder silently
            warn_user(
                f"${DATA_ENV_VAR} is {env!r}, which is not a folder; looking in shared/data "
                "above the working directory and the package instead.",
            )
    cwd = Path.cwd().resolve()
    roots.extend(parent / "shared" / "data" for parent in (cwd, *cwd.parents))
    # Also look above the source tree (src/deltavae/datasets -> repository and its parents), so
    # code run from another directory still finds a data folder next to the checkout.
    here = Path(__file__).resolve()
    roots.extend(parent / "shared" / "data" for parent in here.parents[2:])
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def _check_data_dir(data_dir, relpath: str) -> None:
    """Refuse a ``data_dir`` that is no path (a number, a list), naming the argument: Path's
    own message named none ("expected str, bytes or os.PathLike object, not int")."""
    if data_dir is None or isinstance(data_dir, str | os.PathLike):
        return
    size = ""
    if relpath == _FILES["mnist"]:  # mnist(500), as synthetic_counts(500) takes its size first
        size = f" To keep the first images, pass n: mnist(n={short_repr(data_dir)})."
    raise TypeError(
        "data_dir must be a folder or file path (str or pathlib.Path), got "
        f"{short_repr(data_dir)}.{size}"
    )


def _resolve_file(relpath: str, data_dir: str | os.PathLike | None) -> Path:
    """Find ``relpath`` (``folder/file``) given a file, a folder or nothing.

    ``data_dir`` may be the file itself, the dataset's own folder, or the data root that holds
    the dataset folders.
    """
    rel = Path(relpath)
    _check_data_dir(data_dir, relpath)
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        if given.is_file():
            owner = _owner(given.name)
            if given.name != rel.name and owner is not None:
                # Another loader's file would be read, and returned, as this dataset.
                raise ValueError(
                    f"data_dir={str(given)!r} is the file of {owner}, not {rel.name!r}: pass "
                    f"this dataset's file, its folder or the data root."
                )
            return given
        tried = [given / rel, given / rel.name]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"could not find {rel.name!r} under data_dir={str(given)!r}; looked for "
            f"{[str(t) for t in tried]}. Pass the file itself, its folder or the data root "
            f"that contains {str(rel.parent)!r}."
        )
    roots = _search_roots()
    env = os.environ.get(DATA_ENV_VAR)  # the data root, or (as data_dir) the dataset's folder
    own = [Path(env).expanduser() / rel.name] if env else []
    for candidate in own + [root / rel for root in roots]:
        if candidate.is_file():
            logger.info("reading %s", candidate)
            return candidate
    raise FileNotFoundError(
        f"could not find the shared dataset {str(rel)!r}. Looked in ${DATA_ENV_VAR} "
        f"({os.environ.get(DATA_ENV_VAR, 'unset')}) and in these folders: "
        f"{[str(r) for r in roots]}. Pass data_dir='/path/to/shared/data' or set the "
        f"{DATA_ENV_VAR} environment variable to the data root (or to the folder "
        f"holding {rel.name!r})."
    )


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
    genes; cerebellum and hypothalamus all): intersect ``var_names`` before deconvolution. The
    reference's total count over all genes is in ``obs["nUMI_all_genes"]``. The cerebellum
    reference's ``nUMI`` column is renamed to that name.

    Parameters
    ----------
    name
        One of ``"cerebellum"`` (Slide-seq), ``"hippocampus"`` (Visium),
        ``"hypothalamus"`` (MERFISH) or ``"lymphnode"`` (Visium).
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
    if not isinstance(name, str) or name not in _PAIR_FILES:
        raise ValueError(
            f"unknown spatial/reference pair name={name!r}; expected one of {sorted(_PAIR_FILES)}"
        )
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
