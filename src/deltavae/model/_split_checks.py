"""``train(datasplitter_kwargs={"external_indexing": [train, validation, test]})`` read as the
user meant it, or refused by name before anything trains.

scvi-tools takes the lists as they are: the split options beside them (``shuffle_set_split``,
``validation_size``) were dropped in silence; lists of ints were refused as "not a
np.array"; boolean masks as "duplicate indexing in train set"; cells in no list raised a bare
``Warning("There are missing indices please fix or remove those lines")``; a position past the
last cell an ``IndexError`` from inside the fit; and the user's own list was lengthened to
three items in place.

A split by fractions that leaves no validation row is refused in the user's terms
(:func:`none_held_out`): how many rows the default train_size needs, not a value they never
passed.
"""

from __future__ import annotations

import numpy as np

from .._checks import short_repr
from ..train._data import split_sizes
from ._validation import warn_user

_PARTS = ("training", "validation", "test")


def _positions(part, n_rows: int, which: str, unit: str) -> np.ndarray:
    """One list of ``external_indexing`` as positions (ints), a boolean mask of every row
    read as the positions it marks."""
    values = np.asarray([] if part is None else part)
    if values.dtype == bool and values.ndim == 1 and len(values) == n_rows:
        return np.flatnonzero(values)
    if values.size == 0:
        return np.array([], dtype=np.int64)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"datasplitter_kwargs['external_indexing'] lists the {which} {unit}s by position "
            f"(integers from 0 to {n_rows - 1}) or as a boolean mask of all {n_rows}; got "
            f"{short_repr(part)}. For obs names, pass adata.obs_names.get_indexer(names)."
        )
    outside = values[(values < 0) | (values >= n_rows)]
    if len(outside):
        raise ValueError(
            f"datasplitter_kwargs['external_indexing'] lists {which} {unit} positions outside "
            f"the {n_rows} {unit}s (0 to {n_rows - 1}): {short_repr(np.unique(outside))}."
        )
    return values.astype(np.int64, copy=False)


#: datasplitter_kwargs that are ``train``'s own arguments (scvi-tools passed both: "got
#: multiple values for keyword argument"), or that deltavae sets itself.
_OWN = {
    "batch_size": "train(batch_size=...)",
    "train_size": "train(train_size=...)",
    "validation_size": "train(validation_size=...)",
    "shuffle_set_split": "train(shuffle_set_split=...)",
    "block_size": "train(shuffle_block_size=...)",
    "distributed_sampler": "train(strategy='ddp', devices=N), which sets it",
}


def check_splitter_keys(split: dict) -> None:
    """Refuse ``datasplitter_kwargs`` keys that ``train`` takes as its own arguments (a raw
    TypeError from scvi-tools), or sets itself (``distributed_sampler`` outside DDP failed in
    torch: "Default process group has not been initialized")."""
    for key, instead in _OWN.items():
        if key in split:
            raise ValueError(
                f"datasplitter_kwargs[{key!r}] is not read there: pass {instead} instead."
            )


def checked_external_split(
    trainer_kwargs: dict, validation_size, n_rows: int, unit: str = "cell", train_size=None
) -> None:
    """Refuse the split options ``external_indexing`` makes unread, and lists scvi-tools would
    refuse or misread; put in ``trainer_kwargs`` (in place) a copy of ``datasplitter_kwargs``
    whose ``external_indexing`` is a new list of int arrays, which scvi-tools may lengthen.
    ``train_size``: the value the user wrote (``None`` where left to its default), warned as
    unread: the lists win (it was read by nothing, in silence)."""
    split = trainer_kwargs.get("datasplitter_kwargs") or {}
    check_splitter_keys(split)
    external = split.get("external_indexing")
    if external is None:
        return
    unread = {"shuffle_set_split": trainer_kwargs.get("shuffle_set_split")}
    unread["validation_size"] = validation_size
    given = [f"{name}={value!r}" for name, value in unread.items() if value is not None]
    if given:
        raise ValueError(
            f"{' and '.join(given)} cannot apply: datasplitter_kwargs['external_indexing'] lists "
            f"the {unit}s of each split, in the order given. Leave {' and '.join(given)} out, "
            f"or leave external_indexing out to split by fractions."
        )
    if isinstance(external, np.ndarray) and external.ndim == 1 or not hasattr(external, "__len__"):
        raise ValueError(
            "datasplitter_kwargs['external_indexing'] is a list of up to three lists of "
            f"{unit} positions (training, validation, test), e.g. [train_idx, val_idx]; got "
            f"{short_repr(external)}."
        )
    if len(external) > 3:
        raise ValueError(
            f"datasplitter_kwargs['external_indexing'] holds {len(external)} lists; it takes "
            f"up to three ({unit}s to train on, to validate on, held out as a test split)."
        )
    parts = [_positions(p, n_rows, w, unit) for p, w in zip(external, _PARTS, strict=False)]
    for part, which in zip(parts, _PARTS, strict=False):
        if len(np.unique(part)) < len(part):
            raise ValueError(
                f"datasplitter_kwargs['external_indexing'] lists some {which} {unit}s more than "
                "once; list each once."
            )
    for i, j in ((0, 1), (0, 2), (1, 2)):
        if i < len(parts) and j < len(parts) and len(np.intersect1d(parts[i], parts[j])):
            raise ValueError(
                f"datasplitter_kwargs['external_indexing'] lists {unit}s in both the {_PARTS[i]} "
                f"and the {_PARTS[j]} list: "
                f"{short_repr(np.intersect1d(parts[i], parts[j]))}. List each {unit} in one."
            )
    missing = n_rows - sum(len(p) for p in parts)
    if missing:
        raise ValueError(
            f"datasplitter_kwargs['external_indexing'] leaves {missing} of the {n_rows} {unit}s "
            f"in no list; scvi-tools needs every {unit} in one: list the rest third, as the test "
            "split (neither trained nor validated on)."
        )
    trainer_kwargs["datasplitter_kwargs"] = {**split, "external_indexing": parts}
    if train_size is not None:
        sizes = ", ".join(f"{len(p)} {w}" for p, w in zip(parts, _PARTS, strict=False) if len(p))
        warn_user(
            f"train_size={short_repr(train_size)} is not read: datasplitter_kwargs["
            f"'external_indexing'] lists the {unit}s of each split and wins ({sizes}). Leave "
            "train_size out, or leave external_indexing out to split by fractions.",
            UserWarning,
        )


def none_held_out(n_rows: int, unit: str, train_size: float, by_default: bool) -> str:
    """Why ``n_rows`` rows leave no validation row at ``train_size`` (``by_default``: the
    value train() chose, not one the user wrote, said in their terms), how many are needed,
    and what to pass.

    Examples
    --------
    >>> none_held_out(5, "spot", 0.9, True)
    'Training holds 10% of the spots out ... of 5 spots that is none; it takes at least 10 spots...'
    """
    sizes = range(n_rows + 1, n_rows + 10**5)
    needed = next((n for n in sizes if split_sizes(n, train_size, None, {})[1]), None)
    share = f"{(1 - train_size) * 100:.3g}%"
    if by_default:
        told = (
            f"Training holds {share} of the {unit}s out to compute the validation ELBO (the "
            f"default train_size={train_size})"
        )
    else:
        told = f"train_size={train_size} holds {share} of the {unit}s out for the validation ELBO"
    needs = f"; it takes at least {needed} {unit}s" if needed else ""
    return (
        f"{told}: of {n_rows} {unit}s that is none{needs}. "
        f"Pass train_size=1.0 to train on every {unit} without validation, or use more "
        f"{unit}s."
    )
