"""The "did you mean ...?" hint of every message refusing an unknown name (a keyword, a
column, a gene, a history key), in one wording."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name, known: Iterable, n: int = 3, end: str = "") -> str:
    """``"did you mean 'a' or 'b'?"`` for the (at most ``n``) names of ``known`` closest to
    ``name`` (the same name in other case first, then :func:`difflib.get_close_matches`, its
    default cutoff), else those that start with it (``n_samples`` for
    ``n_samples_overall``), followed by ``end`` (a space before the next sentence); ``""``
    where none is.

    Examples
    --------
    >>> did_you_mean("elbo_trian", ["elbo_train", "lr"])
    "did you mean 'elbo_train'?"
    >>> did_you_mean("max_epoch", ["max_epochs", "min_epochs", "lr"])
    "did you mean 'max_epochs' or 'min_epochs'?"
    >>> did_you_mean("isg15", ["ISG15", "IFI6"])
    "did you mean 'ISG15'?"
    >>> did_you_mean("zzz", ["lr"])
    ''
    """
    name, known = str(name), list(dict.fromkeys(str(k) for k in known))
    # The same name in other case first (a mouse gene's case for a human one, 'isg15'),
    # which difflib's ratio, case-sensitive, scores low.
    close = [k for k in known if k.lower() == name.lower() and k != name][:n]
    close = close or difflib.get_close_matches(name, known, n=n)
    close = close or [k for k in known if name and k.startswith(name)][:n]
    return f"did you mean {' or '.join(map(repr, close))}?{end}" if close else ""


#: What joins an identifier appended to a gene's name: muscat's ``CD79A_ENSG00000105369``,
#: R's ``make.unique`` ``CD79A.1``, ``CD79A-1``, ``CD79A|ENSG...``.
_SEPARATORS = "_.-|:"


def suffixed_hint(missing: Iterable, known: Iterable, n: int = 3) -> str:
    """``"'CD79A' is 'CD79A_ENSG00000105369' here"`` for the (first ``n``) names of ``missing``
    that ``known`` holds with an identifier appended (after ``_``, ``.``, ``-``, ``|`` or
    ``:``), which difflib ranks below shorter names (``'CD9'`` for ``'CD79A'``); ``""`` where
    none is.

    Examples
    --------
    >>> suffixed_hint(["CD79A", "XYZ"], ["CD9", "CD79A_ENSG00000105369"])
    "'CD79A' is 'CD79A_ENSG00000105369' here"
    >>> suffixed_hint(["CD79"], ["CD79A", "CD79B"])
    ''
    """
    known = [str(k) for k in known]
    found = []
    for name in dict.fromkeys(str(g) for g in missing):
        stem = len(name)
        hits = [k for k in known if k.startswith(name) and len(k) > stem and k[stem] in _SEPARATORS]
        if hits:
            found.append(f"{name!r} is {' or '.join(map(repr, hits[:2]))}")
        if len(found) == n:
            break
    return "; ".join(found) + " here" if found else ""
