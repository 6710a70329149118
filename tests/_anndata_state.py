"""An AnnData's state (obs, var, uns, obsm, varm, layers, obsp: keys, order and values) kept
as a copy, and compared later: a call that failed must leave the user's AnnData as it was."""

import copy

import numpy as np
import pandas as pd

_MAPPINGS = ("obsm", "varm", "layers", "obsp")


def state(adata) -> dict:
    """A deep copy of what a call may change in ``adata``."""
    kept = {"obs": adata.obs.copy(), "var": adata.var.copy(), "uns": copy.deepcopy(dict(adata.uns))}
    for slot in _MAPPINGS:
        kept[slot] = {k: copy.deepcopy(v) for k, v in getattr(adata, slot).items()}
    return kept


def _same(a, b) -> bool:
    if isinstance(a, pd.DataFrame | pd.Series):
        return isinstance(b, type(a)) and a.equals(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if hasattr(a, "toarray"):
        a, b = a.toarray(), b.toarray() if hasattr(b, "toarray") else b
    if isinstance(a, np.ndarray):
        b = np.asarray(b)
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and bool(np.all((a == b) | (pd.isna(a) & pd.isna(b))))
        )
    return type(a) is type(b) and (a == b or (a != a and b != b))


def assert_unchanged(before: dict, adata) -> None:
    """``adata`` holds what :func:`state` kept: every slot's keys in order, and their values."""
    after = state(adata)
    for slot, kept in before.items():
        now = after[slot]
        if slot in ("obs", "var"):
            assert list(now.columns) == list(kept.columns), (slot, list(now.columns))
            pd.testing.assert_frame_equal(now, kept, obj=slot)
            continue
        assert list(now) == list(kept), (slot, list(now), list(kept))
        for key in kept:
            assert _same(kept[key], now[key]), f"{slot}[{key!r}] changed"
