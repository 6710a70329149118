"""Spots on their tissue image: ``uns["spatial"]`` read as :func:`scanpy.pl.spatial` reads it.

Space Ranger (and ``sc.read_visium``, ``squidpy.read.visium``) writes the spots' coordinates
in ``obsm["spatial"]`` in pixels of the full-resolution image, and smaller images in
``uns["spatial"][library_id]["images"]`` (``"hires"``, ``"lowres"``) with the factors that take
full-resolution pixels to theirs (``scalefactors["tissue_hires_scalef"]`` ...) and the spots'
diameter (``scalefactors["spot_diameter_fullres"]``). A spot drawn over an image is drawn at
its coordinates times the image's factor, and to scale.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import EllipseCollection

from .._checks import check_bool, short_repr


class _Default(enum.Enum):
    """scanpy's ``_empty``: an argument not given (``None`` means "no image")."""

    token = 0

    def __repr__(self) -> str:
        return "<default>"


DEFAULT = _Default.token

doc_tissue = """\
img_key
    Image of ``uns["spatial"][library_id]["images"]`` to draw the spots over, and whose
    scale factor (``scalefactors["tissue_<img_key>_scalef"]``) takes the full-resolution
    coordinates to its pixels: if not given, ``"hires"`` where there is one, else
    ``"lowres"``, as :func:`scanpy.pl.spatial`; ``None`` draws the coordinates as they are,
    without an image.
    This and the six below apply to ``basis="spatial"`` only (refused on another basis).
library_id
    Library of ``uns["spatial"]``; by default the only one there, or the only one the
    spots come from by an obs column of library names (``library_id``, as
    ``anndata.concat(..., label="library_id")`` writes it). Spots of other libraries by
    that column are refused over an image: draw one library at a time.
scale_factor
    Factor from the coordinates to the image's pixels; default the image's.
spot_size
    Spots' diameter in full-resolution pixels; default ``scalefactors["spot_diameter_fullres"]``.
    With a diameter the spots are drawn to scale, as :func:`scanpy.pl.spatial` draws them.
alpha_img
    Opacity of the image, as :func:`scanpy.pl.spatial`'s.
bw
    Draw the image in grey, as :func:`scanpy.pl.spatial` does.
crop_coord
    The part of the image to draw, ``(left, right, top, bottom)`` in full-resolution
    pixels, as :func:`scanpy.pl.spatial`'s."""

#: The arguments of :func:`scanpy.pl.spatial` that place spots on their image.
PLACING = ("img_key", "library_id", "scale_factor", "spot_size", "alpha_img", "bw", "crop_coord")


@dataclass(frozen=True)
class Tissue:
    """How spots are drawn: over ``image``, at coordinates times ``scale``, ``diameter``
    (drawn pixels) across."""

    image: np.ndarray | None
    scale: float
    diameter: float | None
    alpha: float = 1.0
    crop: tuple[float, float, float, float] | None = None  # in drawn coordinates


def tissue(
    adata: AnnData,
    img_key=DEFAULT,
    library_id=DEFAULT,
    scale_factor=None,
    spot_size=None,
    alpha_img: float = 1.0,
    bw: bool = False,
    crop_coord=None,
) -> Tissue:
    """The image, scale factor and spot diameter of ``adata``'s spots, as
    :func:`scanpy.pl.spatial` resolves ``img_key``, ``library_id``, ``scale_factor`` and
    ``spot_size`` (with errors that name what there is)."""
    check_bool("bw", bw)
    libraries = adata.uns.get("spatial", {})
    libraries = libraries if isinstance(libraries, Mapping) else {}
    column, held = library_column(adata, libraries)
    if library_id is DEFAULT and len(held) == 1:  # one slide of several concatenated
        library_id = held[0]
    if library_id is DEFAULT:
        if len(libraries) > 1 and img_key is not None:
            which = (
                f"; its spots come from {len(held)} of them by obs[{column!r}]: draw one "
                f"library at a time, adata[adata.obs[{column!r}] == {held[0]!r}], with "
                f"library_id={held[0]!r}"
                if len(held) > 1
                else ""
            )
            raise ValueError(
                f"adata.uns['spatial'] holds {len(libraries)} libraries "
                f"{short_repr(list(libraries), n=10, unit='libraries')}{which}: pass "
                "library_id= (the library of these spots), or img_key=None to draw the "
                "coordinates without an image."
            )
        library_id = next(iter(libraries)) if len(libraries) == 1 else None
    elif library_id is not None and library_id not in libraries:
        raise KeyError(
            f"library_id={library_id!r} is not in adata.uns['spatial']; available: "
            f"{short_repr(list(libraries), n=10, unit='libraries')}."
        )
    data = libraries.get(library_id, {}) if library_id is not None else {}
    images = data.get("images", {}) or {}
    factors = data.get("scalefactors", {}) or {}
    if img_key is DEFAULT:
        img_key = next((key for key in ("hires", "lowres") if key in images), None)
    elif img_key is not None and img_key not in images:
        where = f"adata.uns['spatial'][{library_id!r}]['images']" if library_id else None
        raise KeyError(
            f"img_key={img_key!r} is not in {where}; available: {list(images)}."
            if where
            else f"img_key={img_key!r}, and adata.uns has no 'spatial' library with images: "
            "pass img_key=None."
        )
    others = [lib for lib in held if str(lib) != str(library_id)]
    if library_id is not None and img_key is not None and others:
        # Several slides concatenated (anndata.concat(..., label="library_id")): the spots of
        # the others would be drawn, at their own slide's coordinates, over this one's image.
        values = adata.obs[column]
        n_other = int((values.notna() & (values.astype(str) != str(library_id))).sum())
        raise ValueError(
            f"{n_other} of the {adata.n_obs} spots belong to other libraries than "
            f"library_id={library_id!r} by obs[{column!r}] ({short_repr(others)}): they would "
            f"be drawn over {library_id!r}'s image. Draw one library at a time, "
            f"adata[adata.obs[{column!r}] == {library_id!r}], or pass img_key=None to draw "
            "the coordinates without an image."
        )
    if scale_factor is None:
        scale_factor = 1.0
        if img_key is not None:
            name = f"tissue_{img_key}_scalef"
            if name not in factors:
                raise KeyError(
                    f"adata.uns['spatial'][{library_id!r}]['scalefactors'] has no {name!r}, the "
                    f"factor of image {img_key!r}: pass scale_factor=."
                )
            scale_factor = factors[name]
    if spot_size is None:
        spot_size = factors.get("spot_diameter_fullres")
    for arg, value in {"scale_factor": scale_factor, "spot_size": spot_size}.items():
        if value is not None and not (np.isfinite(value) and float(value) > 0):
            raise ValueError(f"{arg} must be a number above 0; got {short_repr(value)}.")
    scale = float(scale_factor)
    image = np.asarray(images[img_key]) if img_key is not None else None
    if bw and image is not None:  # scanpy's grey: luminance of the RGB channels, from 0 to 1
        top = 255.0 if np.issubdtype(image.dtype, np.integer) else 1.0
        image = np.dot(image[..., :3], [0.2989, 0.5870, 0.1140]) / top
    if crop_coord is not None:
        if np.size(crop_coord) != 4:
            raise ValueError(
                f"crop_coord must be (left, right, top, bottom); got {short_repr(crop_coord)}."
            )
        crop_coord = tuple(float(c) * scale for c in crop_coord)
    diameter = None if spot_size is None else float(spot_size) * scale
    return Tissue(image, scale, diameter, float(alpha_img), crop_coord)


def library_column(adata: AnnData, libraries: Mapping) -> tuple[str | None, list]:
    """The obs column that tells each spot's library (its values the names of
    ``uns["spatial"]``, as ``anndata.concat(..., label="library_id")`` writes them), and the
    libraries its spots hold; ``(None, [])`` where no column does."""
    if len(libraries) < 2:
        return None, []
    names = {str(name) for name in libraries}
    for column in ("library_id", *[c for c in adata.obs.columns if c != "library_id"]):
        values = adata.obs.get(column)
        if values is None or pd.api.types.is_numeric_dtype(values):
            continue
        held = pd.unique(values.dropna().astype(str))
        if len(held) and set(held) <= names:
            return column, [name for name in libraries if str(name) in set(held)]
    return None, []


def placed(basis: str, is_tissue: bool, **placing) -> dict:
    """The tissue arguments of a plot (:data:`PLACING`), refused by name where ``basis`` is no
    tissue: they would be left unused without a word."""
    check_bool("bw", placing.get("bw", False))
    unset = {"alpha_img": 1.0, "bw": False}  # the others' defaults are None and DEFAULT
    given = [k for k, v in placing.items() if v is not None and v is not DEFAULT]
    given = [k for k in given if k not in unset or placing[k] != unset[k]]
    if given and not is_tissue:
        raise ValueError(
            f"{sorted(given)} place spots on a tissue image: basis={basis!r} is no tissue "
            "(pass basis='spatial', or leave them out)."
        )
    return placing


def spot_drawer(on: Tissue | None, size, n_spots: int, points: float):
    """``draw(ax, xy, rows, **scatter)``: the spots ``rows`` (a mask of all ``n_spots``) at
    ``xy``, as circles to scale where their diameter is known (``size`` a factor on it, as
    :func:`scanpy.pl.spatial`), else as markers of ``size`` points² (default ``points``).
    ``size`` may give each spot its own (one value per spot, as scanpy's)."""
    if size is not None and np.ndim(size) > 0:
        size = np.asarray(size, dtype=float).ravel()
        if size.size != n_spots:
            raise ValueError(f"size has {size.size} values; pass one, or one per spot ({n_spots}).")
    if on is not None and on.diameter is not None:  # to scale, as sc.pl.spatial draws spots
        across = on.diameter * (1.0 if size is None else size)
        return lambda ax, xy, rows, **kw: spots(
            ax, xy, np.broadcast_to(across, n_spots)[rows], **kw
        )
    size = points if size is None else size
    return lambda ax, xy, rows, **kw: ax.scatter(
        *xy.T, s=np.broadcast_to(size, n_spots)[rows], **kw
    )


def spots(ax: Axes, xy: np.ndarray, diameter, **kwargs) -> EllipseCollection:
    """Spots as circles ``diameter`` across in data units (a scatter's markers are in points
    and do not follow the image's scale), coloured as ``ax.scatter`` colours them."""
    values, vmin, vmax = kwargs.pop("c"), kwargs.pop("vmin", None), kwargs.pop("vmax", None)
    circles = EllipseCollection(
        diameter,
        diameter,
        0.0,
        units="xy",
        offsets=xy,
        offset_transform=ax.transData,
        **kwargs,
    )
    if isinstance(values, str):  # one colour (light grey, the spots without a value)
        circles.set_facecolor(values)
    else:
        circles.set_array(np.asarray(values, dtype=float))
        circles.set_clim(vmin, vmax)
    circles.set_linewidth(0)
    ax.add_collection(circles, autolim=True)
    ax.autoscale_view()
    return circles


def draw_tissue(ax: Axes, tissue: Tissue | None) -> None:
    """After the spots are drawn: the image under them, to scale, rows down (as
    :func:`scanpy.pl.spatial`), the view on the spots. An axes already in image orientation
    (a second call, an image of the user's) keeps it."""
    if tissue is not None and (tissue.image is not None or tissue.crop is not None):
        x0, x1 = sorted(ax.get_xlim())
        y0, y1 = sorted(ax.get_ylim())
        if tissue.image is not None:
            # grey on its whole scale, as the colours were (not stretched to the tissue's range)
            grey = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if tissue.image.ndim == 2 else {}
            ax.imshow(tissue.image, alpha=tissue.alpha, **grey)
        if tissue.crop is not None:
            x0, x1, y0, y1 = tissue.crop
        ax.set_xlim(x0, x1)
        ax.set_ylim(max(y0, y1), min(y0, y1))
    ax.set_aspect("equal")
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
