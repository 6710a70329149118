"""Which model wrote each result into an AnnData, so that another model's results replaced
by a ``write_to_adata`` are said.

NMFDeconv and SpatialImputer both write ``obsm["proportions"]`` and ``obs["cell_abundance"]``
by default (the keys :func:`deltavae.pl.spatial_proportions` reads), and two models of one
class set up differently (a ZINBVAE per batch column) both ``obsm["X_zinbvae"]``: comparing
them in one AnnData, the results of the first written were silently lost. A model writing again
over its own results, or over those of a model of its class set up alike (a notebook cell run
again, from a reference of the same cell types), is the usual rewrite and is not warned
about.

The record is kept here, in memory, not in the AnnData (which a write changes only in the
slots its docstring names); a dead AnnData's record goes with it.
"""

from __future__ import annotations

import contextlib
import weakref

from .._warn import warn_user

#: id(AnnData) -> (weak reference to it, {"slot/key": (model class, its setup)}).
_WRITERS: dict[int, tuple[weakref.ref, dict[str, tuple[str, str]]]] = {}


def _writer(model) -> tuple[str, str]:
    """A model's class and setup, and a spot model's cell types: what tells two models'
    results apart (two NMFDeconv of one setup from references of other cell types)."""
    registry = getattr(model, "registry_", None) or {}
    setup = sorted((registry.get("setup_args") or {}).items())
    types = getattr(model, "cell_types_", None)
    return type(model).__name__, repr((setup, None if types is None else list(types)))


def _record(adata) -> dict[str, tuple[str, str]]:
    for key in [k for k, (ref, _) in _WRITERS.items() if ref() is None]:
        del _WRITERS[key]  # AnnDatas gone since
    entry = _WRITERS.get(id(adata))
    if entry is None or entry[0]() is not adata:
        entry = _WRITERS[id(adata)] = (weakref.ref(adata), {})
    return entry[1]


@contextlib.contextmanager
def writers_unchanged_on_failure(*adatas):
    """Within it, a failure (any exception, an interrupt) puts the writer records of
    ``adatas`` (the AnnDatas the call writes into; ``None`` skipped) back as they were: a
    write undone by ``unchanged_on_failure`` stayed recorded as the writer of its keys, and
    the next model writing them was told it replaced its results. Only theirs are kept (every
    live AnnData's record was copied at each write; a write changes its target's alone)."""
    kept = {}
    for adata in adatas:
        if adata is not None and id(adata) not in kept:
            entry = _WRITERS.get(id(adata))
            mine = entry is not None and entry[0]() is adata
            kept[id(adata)] = (adata, entry if mine else None, dict(entry[1]) if mine else None)
    try:
        yield
    except BaseException:
        for key, (adata, entry, record) in kept.items():
            now = _WRITERS.get(key)
            if entry is None:  # none before: the one the call made goes
                if now is not None and now[0]() is adata:
                    del _WRITERS[key]
                continue
            entry[1].clear()
            entry[1].update(record)
            _WRITERS[key] = entry
        raise


def note_writer(model, adata, keys: list[str]) -> None:
    """Record ``model`` as the writer of ``keys`` (``"slot/key"``) in ``adata``; warn where
    another model's results (another class, or its class set up otherwise) were replaced."""
    record, writer = _record(adata), _writer(model)
    results = [k for k in keys if k.split("/", 1)[0] in ("obs", "obsm", "layers", "varm")]
    replaced = [k for k in results if record.get(k, writer) != writer]
    if replaced:
        others = sorted({record[k][0] for k in replaced})
        same = others == [writer[0]]
        typed = getattr(model, "cell_types_", None) is not None
        what = "set up otherwise" + (", or of other cell types" if typed else "")
        who = f"another {writer[0]} ({what})" if same else " and ".join(others)
        named = ", ".join(f"{k.split('/', 1)[0]}[{k.split('/', 1)[1]!r}]" for k in replaced)
        warn_user(
            f"write_to_adata replaced {named}, written before by {who}: its results "
            "there are lost. To keep each model's results, write one of them with its own prefix, "
            "e.g. model.write_to_adata(adata, key_added='second')."
        )
    for key in results:
        record[key] = writer
