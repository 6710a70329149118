"""numba's ``njit`` for the package's compiled loops: cached on disk, and without the cache
where no place for it can be written.

``numba.njit(cache=True)`` refuses at the decoration, so at ``import deltavae``, where
neither the package's ``__pycache__`` nor a user cache directory is writable (a read-only
image without a home directory): there the loops compile in each process instead (about
1 s on its first draw).

Examples
--------
>>> @compiled
... def twice(x):
...     return 2 * x
>>> twice(21)
42
"""

from __future__ import annotations

import numba


def compiled(function=None, **options):
    """``numba.njit(cache=True, nogil=True, **options)`` of ``function`` (as a decorator,
    with or without ``options``), uncached where numba finds no cache it can write."""

    def decorate(function):
        try:
            return numba.njit(cache=True, nogil=True, **options)(function)
        except RuntimeError as err:  # numba: "cannot cache function ...: no locator"
            if "cannot cache" not in str(err):
                raise
            return numba.njit(nogil=True, **options)(function)

    return decorate if function is None else decorate(function)
