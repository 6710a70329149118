"""Warnings that point at the user's line, however deep in deltavae (or the libraries it calls)
they are raised."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: Libraries whose frames are not the user's, read only where already imported: the metrics and
#: datasets warn without importing scvi-tools or torch.
_LIBRARIES = ("scvi", "torch")


def _library_dirs() -> tuple[str, ...]:
    dirs = [_PACKAGE_DIR, os.path.abspath(contextlib.__file__)]  # a check exiting as a context
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        if getattr(module, "__file__", None):
            dirs.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
    return tuple(dirs)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, pointing at the user's line: the first caller outside deltavae, scvi and torch.

    The same check is reached through different depths of deltavae's helpers and of
    scvi-tools' and torch's wrappers (and from :mod:`deltavae.pl`), so a fixed ``stacklevel``
    pointed into a library from one path and above the user's line (``sys:1`` at a script's
    top level) from another.
    """
    dirs = _library_dirs()
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(dirs):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
