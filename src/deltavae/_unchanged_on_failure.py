"""An AnnData put back as it was when a call that writes into it fails midway.

``write_to_adata`` wrote some of its results before a later step failed (CGMDVAE's latents
before the labels' colours, Archetypes' weights before its markers), and a spot model's
``from_reference`` set the spots up, replacing another model's scvi-tools codes and ids in
them, before the model it builds refused an argument: the user's AnnData was left half
written, with the keys of another model replaced. Here each slot is kept by reference (no
matrix is copied) before the call, and put back, keys and order, if it raises. The file of an
AnnData opened ``backed="r+"``, which ``write_to_adata`` writes into too, is put back by
:mod:`deltavae._file_unchanged_on_failure`.
"""

from __future__ import annotations

import contextlib

from anndata import AnnData

from ._numbered_obs import refuse_numbered_tables

#: The mappings of an AnnData a call may write into (``obs`` and ``var`` are frames).
_MAPPINGS = ("obsm", "varm", "layers", "obsp", "varp")


def _kept(adata: AnnData) -> dict:
    """``adata``'s slots as they are: the frames as shallow copies (a column written later
    replaces its array, never writes into it), each mapping's entries by reference."""
    kept = {"obs": adata.obs.copy(deep=False), "var": adata.var.copy(deep=False)}
    kept["uns"] = dict(adata.uns)
    for slot in _MAPPINGS:
        try:
            kept[slot] = dict(getattr(adata, slot))
        except ValueError:  # obsm's tables indexed by other names than numbered obs: said so
            refuse_numbered_tables(adata, "adata")
            raise
    return kept


def _put_back(adata: AnnData, kept: dict) -> None:
    """``adata``'s slots as :func:`_kept` kept them, in their order."""
    adata.obs, adata.var = kept["obs"], kept["var"]  # the names first: the mappings check them
    uns = adata.uns
    if list(uns) != list(kept["uns"]) or any(uns[k] is not v for k, v in kept["uns"].items()):
        uns.clear()
        uns.update(kept["uns"])
    for slot in _MAPPINGS:
        now, then = getattr(adata, slot), kept[slot]
        if list(now) == list(then) and all(now[k] is v for k, v in then.items()):
            continue
        for key in list(now):
            del now[key]
        for key, value in then.items():
            now[key] = value


@contextlib.contextmanager
def unchanged_on_failure(*adatas: AnnData | None, stores: tuple[dict, ...] = ()):
    """Within it, a failure (any exception, an interrupt) leaves each of ``adatas`` (``None``
    and views skipped: nothing is written into those) with the obs and var columns and the
    uns, obsm, varm, layers, obsp and varp entries it had before, and each of ``stores``
    (scvi-tools' setups of a model class by AnnData id: the setup the ids put back name)
    with the entries it had, and raises."""
    held = [(a, _kept(a)) for a in adatas if isinstance(a, AnnData) and not a.is_view]
    entries = [(store, dict(store)) for store in stores]
    try:
        yield
    except BaseException:
        for adata, kept in held:
            _put_back(adata, kept)
        for store, kept in entries:
            store.clear()
            store.update(kept)
        raise
