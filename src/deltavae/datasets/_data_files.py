"""Where the shared datasets' files are: each loader's file under the data root, and the
folder (``data_dir``, ``$DELTAVAE_DATA`` or ``shared/data`` above the working directory) a
file is found in."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .._checks import short_repr
from .._warn import warn_user

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "DELTAVAE_DATA"

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
