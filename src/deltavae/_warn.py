"""Warnings that point at the user's line, however deep in deltavae they are raised."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn, pointing at the first caller outside the deltavae package.

    A fixed ``stacklevel`` points at the right line from one depth only: a check reached
    through one more helper (or from :mod:`deltavae.pl`) pointed into deltavae, one fewer
    above the user's line (``sys:1`` at a script's top level).
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
